"""Training: initial values, the original's optimizer and clipping, loss going down, exact
resume, evaluation metrics, and the train/eval commands."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.train.evaluate as evaluate_module
from engine.cli import main
from engine.data.dataset import Record, Sample, build_dataset, read_annotations
from engine.io.checkpoint import load_checkpoint
from engine.train.evaluate import evaluate_samples
from engine.train.errors import TrainError
from engine.train.optimizer import AdamWeightDecay, clip_by_global_norm, make_optimizer
from engine.train.trainer import Schedule, Trainer, init_weights, state_path
from reference.config import preset
from reference.model import SeqPAN

TINY = {"max_pos_len": 8, "dim": 16, "num_heads": 2, "word_dim": 6, "visual_dim": 12, "char_dim": 8}
SENTENCES = ["a person opens the door.", "someone sits on a chair.", "the man eats food.",
             "a woman closes a box.", "person turns the light on.", "he drinks a glass of water."]


def write_toy_dataset(root: Path, visual_dim: int, num_videos: int = 8, seed: int = 0) -> tuple[Path, Path, Path]:
    """Charades-format toy data: features where a moment's clips are bright, two queries a video."""
    rng = np.random.default_rng(seed)
    (root / "feats").mkdir(parents=True)
    lines, durations = [], {}
    for v in range(num_videos):
        vid, clips = f"V{v:02d}", int(rng.integers(6, 14))
        durations[vid] = float(clips)
        feats = rng.standard_normal((clips, visual_dim)).astype(np.float32) * 0.1
        for q in range(2):
            start = int(rng.integers(0, clips - 2))
            end = int(rng.integers(start + 1, clips))
            feats[start:end, (v + q) % visual_dim] += 2.0
            lines.append(f"{vid} {start}.0 {end}.0##{SENTENCES[(v + q) % len(SENTENCES)]}")
        np.save(root / "feats" / f"{vid}.npy", feats)
    (root / "durations.json").write_text(json.dumps(durations))
    (root / "train.txt").write_text("\n".join(lines[:12]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[12:]) + "\n")
    return root / "feats", root / "train.txt", root / "val.txt"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (on a busy CPU, more threads crawl)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy(tmp_path):
    feats, train, val = write_toy_dataset(tmp_path / "toy", TINY["visual_dim"])
    durations = tmp_path / "toy" / "durations.json"
    records = [read_annotations(p, "charades", durations) for p in (train, val)]
    data = build_dataset(feats, *records, max_pos_len=TINY["max_pos_len"], visual_dim=TINY["visual_dim"],
                         word_dim=TINY["word_dim"])
    cfg = preset("charades", len(data.word_dict), len(data.char_dict), **TINY)
    return cfg, data


def test_init_weights_follow_the_tf_defaults(toy):
    cfg, data = toy
    model = SeqPAN(cfg)
    init_weights(model, data.word_vectors, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    assert torch.equal(model.query_encoder.words.table, torch.from_numpy(data.word_vectors))
    assert torch.all(params["video_encoder.norm.weight"] == 1) and not params["video_encoder.norm.bias"].any()
    assert not params["sgpa.0.attention.bilinear_1.bias"].any() and not params["predictor.start_dense.bias"].any()
    emb = params["matcher.label_emb"]
    torch.testing.assert_close(emb @ emb.T, torch.eye(4), atol=1e-5, rtol=0)
    limits = {  # sqrt(6 / (fan_in + fan_out)) of each TF variable's shape
        "video_encoder.proj.weight": math.sqrt(6 / (12 + 16)),  # conv1d kernel [1, 12, 16]
        "query_encoder.chars.convs.3.weight": math.sqrt(6 / (4 * 8 + 4 * 40)),  # [1, 4, 8, 40]
        "conv_block.convs.0.depthwise": math.sqrt(6 / (7 * 16 + 7)),  # [7, 1, 16, 1]
        "q2v.w_mul": math.sqrt(6 / (1 + 16)),  # [1, 1, 16]
        "pos_emb.table": math.sqrt(6 / (8 + 16)),  # [8, 16]
    }
    for name, limit in limits.items():
        value = params[name].abs().max().item()
        assert 0.5 * limit < value <= limit, name


def test_optimizer_is_the_originals_adam_without_bias_correction():
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdamWeightDecay([param], [True], lr=0.1, weight_decay=0.01)
    m = v = np.zeros(2)
    p = np.array([1.0, -2.0])
    for grad in ([0.5, 0.1], [-0.2, 0.3]):
        param.grad = torch.tensor(grad)
        opt.step()
        g = np.array(grad)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        p = p - 0.1 * (m / (np.sqrt(v) + 1e-6) + 0.01 * p)
        np.testing.assert_allclose(param.detach().numpy(), p, rtol=1e-6)


def test_weight_decay_skips_layer_norms_and_biases(toy):
    cfg, _ = toy
    model = SeqPAN(cfg)
    opt = make_optimizer(model, 1e-4, 0.01)
    names = [n for n, _ in model.named_parameters()]
    skipped = {n for n, decay in zip(names, opt.decay) if not decay}
    assert "video_encoder.norm.weight" in skipped and "sgpa.1.attention.bilinear_2.bias" in skipped
    assert "query_encoder.chars.convs.0.bias" in skipped and "predictor.start_dense.bias" in skipped
    assert all(n.endswith("bias") or "norm" in n for n in skipped)
    assert "matcher.label_emb" not in skipped and "pos_emb.table" not in skipped


def test_clip_by_global_norm_scales_like_tf():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    assert clip_by_global_norm([a, b], 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(b.grad, torch.tensor([0.8]))
    assert clip_by_global_norm([a, b], 2.0) == pytest.approx(1.0)
    torch.testing.assert_close(b.grad, torch.tensor([0.8]))  # under the clip norm: unchanged


def test_training_steps_reduce_the_loss(toy, tmp_path):
    cfg, data = toy
    schedule = Schedule(epochs=20, batch_size=4, lr=3e-3, patience=20, seed=1)
    trainer = Trainer.fresh(cfg, data, schedule, tmp_path / "run")
    losses = trainer.run(max_steps=30, show_progress=False, log=lambda _: None).losses
    assert len(losses) == 30
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6])


def test_resume_continues_exactly(toy, tmp_path):
    cfg, data = toy
    schedule = Schedule(epochs=3, batch_size=5, lr=1e-3, seed=3)  # 3 batches an epoch: resume mid-epoch
    quiet = {"show_progress": False, "log": lambda _: None}
    straight = Trainer.fresh(cfg, data, schedule, tmp_path / "a")
    straight_losses = straight.run(max_steps=5, **quiet).losses
    first = Trainer.fresh(cfg, data, schedule, tmp_path / "b")
    losses = first.run(max_steps=2, **quiet).losses
    resumed = Trainer.resume(tmp_path / "b" / "last.safetensors", data, tmp_path / "b")
    assert (resumed.progress.epoch, resumed.progress.batch, resumed.progress.step) == (0, 2, 2)
    losses += resumed.run(max_steps=5, **quiet).losses
    assert losses == straight_losses
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    saved = load_checkpoint(tmp_path / "b" / "last.safetensors")
    assert saved.extra["progress"]["step"] == 5 and saved.extra["schedule"]["batch_size"] == 5


def test_resume_keeps_the_best_model_and_early_stopping_state(toy, tmp_path):
    """Stopped after two validations without a better R@1 IoU=0.7 and resumed, a run keeps its best
    score, its count of validations since the best and the best's metrics: it stops early at the step
    an uninterrupted run stops at, with the same best model."""
    cfg, data = toy
    schedule = Schedule(epochs=20, batch_size=4, lr=3e-3, patience=2, seed=1)  # validates every step
    quiet = {"show_progress": False, "log": lambda _: None}
    straight = Trainer.fresh(cfg, data, schedule, tmp_path / "a").run(**quiet)
    assert straight.stopped == "early stopping" and straight.steps > 3  # a best, then 2 epochs of no better
    first = Trainer.fresh(cfg, data, schedule, tmp_path / "b")
    first.run(max_steps=3, **quiet)
    assert first.progress.evals_since_best >= 1  # interrupted while counting towards early stopping
    resumed = Trainer.resume(tmp_path / "b" / "last.safetensors", data, tmp_path / "b")
    result = resumed.run(**quiet)
    assert (result.stopped, result.steps, result.best_metrics) == (straight.stopped, straight.steps,
                                                                   straight.best_metrics)
    best_a, best_b = (load_checkpoint(tmp_path / run / "best.safetensors") for run in "ab")
    assert best_a.extra["progress"] == best_b.extra["progress"]
    for (name, a), b in zip(best_a.model.state_dict().items(), best_b.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_refuses_a_sidecar_from_another_save(toy, tmp_path):
    cfg, data = toy
    quiet = {"show_progress": False, "log": lambda _: None}
    Trainer.fresh(cfg, data, Schedule(batch_size=4), tmp_path / "a").run(max_steps=1, **quiet)
    Trainer.fresh(cfg, data, Schedule(batch_size=4), tmp_path / "b").run(max_steps=2, **quiet)
    last = tmp_path / "a" / "last.safetensors"
    state_path(last).write_bytes(state_path(tmp_path / "b" / "last.safetensors").read_bytes())
    with pytest.raises(TrainError, match="different saves"):
        Trainer.resume(last, data, tmp_path / "a")
    state_path(last).unlink()
    with pytest.raises(TrainError, match="no training state"):
        Trainer.resume(last, data, tmp_path / "a")


def test_eval_metrics_on_hand_made_predictions(monkeypatch):
    record = Record("V", 2.0, 6.0, 10.0, "a person sits.", ("a", "person", "sits", "."))
    samples = [Sample(record, [2], [[2]], 10, 2, 5)] * 5
    # predicted clip indices -> seconds (10 one-second clips) -> IoU with (2, 6):
    # (2,5)->(2,6) 1.0; (0,1)->(0,2) 0.0; (3,5)->(3,6) 0.75; (2,3)->(2,4) 0.5; (4,7)->(4,8) 1/3
    monkeypatch.setattr(evaluate_module, "predict", lambda model, batch: (np.array([2, 0, 3, 2, 4]),
                                                                          np.array([5, 1, 5, 3, 7])))
    result = evaluate_samples(torch.nn.Identity(), samples, {"V": np.zeros((10, 4), np.float32)})
    assert result.predictions == [(2.0, 6.0), (0.0, 2.0), (3.0, 6.0), (2.0, 4.0), (4.0, 8.0)]
    assert result.metrics == pytest.approx({"r1_iou03": 0.8, "r1_iou05": 0.6, "r1_iou07": 0.4,
                                            "miou": (1 + 0 + 0.75 + 0.5 + 1 / 3) / 5})


def test_train_then_eval_commands(tmp_path, capsys):
    feats, train, val = write_toy_dataset(tmp_path / "toy", 1024)
    durations = str(tmp_path / "toy" / "durations.json")
    out = tmp_path / "run"
    common = ["--format", "charades", "--features", str(feats), "--durations", durations, "--json"]
    code = main(["train", *common, "--train", str(train), "--val", str(val), "--out", str(out), "--max-steps", "2",
                 "--dim", "16", "--num-heads", "2", "--max-pos-len", "8", "--batch-size", "4", "--epochs", "2"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["steps"] == 2 and summary["stopped"] == "max steps"
    assert {"r1_iou03", "r1_iou05", "r1_iou07", "miou"} <= set(summary)
    assert (out / "best.safetensors").is_file() and state_path(out / "last.safetensors").is_file()
    code = main(["train", *common, "--train", str(train), "--val", str(val), "--out", str(out), "--max-steps", "3",
                 "--resume", str(out / "last.safetensors")])
    assert code == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
    code = main(["eval", *common, "--checkpoint", str(out / "best.safetensors"), "--annotations", str(val)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["queries"] == 4 and result["skipped"] == 0
    assert all(0.0 <= result[k] <= 1.0 for k in ("r1_iou03", "r1_iou05", "r1_iou07", "miou"))
