"""engine.data.features: the original's feature sampling, time/index conversion, feature loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.features import FeatureError, index_to_time, load_features, sample_features, time_to_index


def _sample_loop(features: np.ndarray, max_pos_len: int) -> np.ndarray:
    """The original's visual_feature_sampling, written as its plain loop."""
    num_clips = features.shape[0]
    if num_clips <= max_pos_len:
        return features
    idxs = np.round(np.arange(0, max_pos_len + 1, 1.0) / max_pos_len * num_clips).astype(np.int32)
    idxs[idxs > num_clips - 1] = num_clips - 1
    out = []
    for i in range(max_pos_len):
        s, e = idxs[i], idxs[i + 1]
        out.append(np.mean(features[s:e], axis=0) if s < e else features[s])
    return np.asarray(out)


def _rows(*values: float) -> np.ndarray:
    """Rows [v, 10 v] as float32 [T, 2]."""
    return np.array([[v, 10 * v] for v in values], dtype=np.float32)


@pytest.mark.parametrize("num_clips, max_pos_len", [(1, 64), (63, 64), (64, 64)])
def test_short_videos_come_back_unchanged(num_clips, max_pos_len):
    features = np.ones((num_clips, 3), dtype=np.float32)
    assert sample_features(features, max_pos_len) is features


def test_one_clip_over_the_limit():
    # T=5, 4 clips: boundaries round(0, 1.25, 2.5, 3.75, 5) = 0, 1, 2 (half to even), 4, 5 -> cap 4
    out = sample_features(_rows(0, 1, 2, 3, 4), 4)
    np.testing.assert_array_equal(out, _rows(0, 1, 2.5, 4))
    assert out.dtype == np.float32


def test_empty_range_takes_the_start_row():
    # T=3, 2 clips: round(0, 1.5, 3) = 0, 2, 3 -> cap 2: mean(rows 0-1), then row 2 alone
    np.testing.assert_array_equal(sample_features(_rows(1, 3, 8), 2), _rows(2, 8))


def test_last_row_is_left_out_of_the_last_mean():
    # T=4, 1 clip: boundaries 0, 4 -> cap 3: the mean of rows 0..2 only
    np.testing.assert_array_equal(sample_features(_rows(1, 2, 3, 100), 1), _rows(2))


def test_halves_round_to_even():
    # T=10, 4 clips: 0, 2.5, 5, 7.5, 10 -> 0, 2, 5, 8, 9 (capped)
    out = sample_features(_rows(*range(10)), 4)
    np.testing.assert_allclose(out, _rows(0.5, 3, 6, 8), rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_clips", [65, 100, 127, 128, 129, 1000, 4096])
@pytest.mark.parametrize("max_pos_len", [1, 2, 7, 64])
def test_matches_the_loop(num_clips, max_pos_len):
    features = np.random.default_rng(num_clips * 100 + max_pos_len).normal(size=(num_clips, 5))
    features = features.astype(np.float32)
    out = sample_features(features, max_pos_len)
    assert out.shape == (min(num_clips, max_pos_len), 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, _sample_loop(features, max_pos_len), rtol=0, atol=1e-6)


def test_huge_video_matches_the_loop():
    features = np.random.default_rng(0).uniform(-8, 8, size=(200_003, 16)).astype(np.float32)
    out = sample_features(features, 64)
    np.testing.assert_allclose(out, _sample_loop(features, 64), rtol=0, atol=1e-6)


def test_sampling_rejects_nonpositive_length():
    with pytest.raises(ValueError, match="max_pos_len"):
        sample_features(np.zeros((3, 2), dtype=np.float32), 0)


def test_time_to_index_picks_the_best_span():
    # 4 units of 2 s: starts 0 2 4 6, ends 2 4 6 8
    assert time_to_index(2.0, 6.0, 4, 8.0) == (1, 2)  # exact span, IoU 1
    assert time_to_index(2.5, 5.5, 4, 8.0) == (1, 2)  # [2, 6]: 3/4 beats [2, 4] and [4, 6]: 1.5/3.5
    assert time_to_index(0.0, 8.0, 4, 8.0) == (0, 3)
    assert time_to_index(7.0, 8.0, 4, 8.0) == (3, 3)  # [6, 8]: 1/2


def test_time_to_index_without_overlap_gives_first_span():
    # every IoU is 0, so the first maximum, (0, 0), wins: a zero-length moment, a moment past
    # the video, a reversed moment
    assert time_to_index(3.0, 3.0, 4, 8.0) == (0, 0)
    assert time_to_index(9.0, 12.0, 4, 8.0) == (0, 0)
    assert time_to_index(6.0, 2.0, 4, 8.0) == (0, 0)


def test_time_to_index_prefers_the_covering_span():
    # 2 units of 2 s, moment [1, 3]: [0, 2] and [2, 4] score 1/3 each, [0, 4] scores 1/2
    assert time_to_index(1.0, 3.0, 2, 4.0) == (0, 1)
    # 4 units of 1 s, moment [1.75, 2.25]: [1, 2] and [2, 3] score 0.2, [1, 3] scores 0.25
    assert time_to_index(1.75, 2.25, 4, 4.0) == (1, 2)


def test_time_to_index_of_a_video_shorter_than_a_second():
    """IoU, not overlap, picks the span also when every union is under a second: [0.2, 0.4] of a 0.8 s
    video of 4 units is unit 1 exactly, though (0, 1) overlaps it as much."""
    assert time_to_index(0.2, 0.4, 4, 0.8) == (1, 1)


def test_time_to_index_one_unit():
    assert time_to_index(0.5, 1.0, 1, 30.0) == (0, 0)


def test_time_to_index_matches_the_original_formulation():
    """The original builds the n*n candidate list and its IoU row by row."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        duration = float(rng.uniform(1, 200))
        start, end = sorted(rng.uniform(-5, duration + 5, size=2).tolist())
        s_times = np.arange(0, n).astype(np.float32) / float(n) * duration
        e_times = np.arange(1, n + 1).astype(np.float32) / float(n) * duration
        best, best_iou = (0, 0), -1.0
        for i in range(n):
            for j in range(n):
                s, e = float(s_times[i]), float(e_times[j])
                inter = max(0.0, min(e, end) - max(s, start))
                union = max(1e-12, max(e, end) - min(s, start))
                if inter / union > best_iou:
                    best, best_iou = (i, j), inter / union
        assert time_to_index(start, end, n, duration) == best


def test_index_to_time():
    assert index_to_time(1, 2, 4, 8.0) == (2.0, 6.0)
    assert index_to_time(0, 2, 3, 10.0) == (0.0, 10.0)
    # float32: 1 * 10 / 3 and 2 * 10 / 3 rounded to float32
    assert index_to_time(1, 1, 3, 10.0) == (float(np.float32(10 / 3)), float(np.float32(20 / 3)))
    assert index_to_time(0, 0, 1, 7.3) == (0.0, float(np.float32(7.3)))
    assert index_to_time(0, 0, 1, np.float64(7.3)) == (0.0, float(np.float32(7.3)))


def test_index_to_time_rejects_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        index_to_time(0, 4, 4, 8.0)
    with pytest.raises(ValueError, match="out of range"):
        index_to_time(-1, 0, 4, 8.0)


def test_load_features_from_path_and_array(tmp_path):
    features = np.arange(12, dtype=np.float64).reshape(3, 4)
    path = tmp_path / "v.npy"
    np.save(path, features)
    for source in (path, str(path), features, features.astype(np.int16)):
        out = load_features(source, visual_dim=4)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, features)


@pytest.mark.parametrize("shape", [(3, 1, 4), (1, 3, 4)])
def test_load_features_squeezes_a_singleton_axis(shape):
    features = np.arange(12, dtype=np.float32).reshape(shape)
    expected = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(load_features(features, visual_dim=4), expected)


def test_feature_error_is_a_value_error():
    assert issubclass(FeatureError, ValueError)


def test_load_features_missing_file(tmp_path):
    with pytest.raises(FeatureError, match="feature file not found"):
        load_features(tmp_path / "absent.npy")


def test_load_features_unreadable_file(tmp_path):
    path = tmp_path / "text.npy"
    path.write_text("not an array")
    with pytest.raises(FeatureError, match="cannot read as .npy"):
        load_features(path)
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.zeros((10, 1024), dtype=np.float32))
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(FeatureError, match="cannot read as .npy"):
        load_features(truncated)


def test_load_features_npz(tmp_path):
    path = tmp_path / "v.npz"
    np.savez(path, a=np.zeros((2, 4)))
    with pytest.raises(FeatureError, match="several arrays"):
        load_features(path, visual_dim=4)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (1, 2, 3, 4), ()])
def test_load_features_wrong_shape(shape):
    with pytest.raises(FeatureError, match=r"expected shape \[T, 4\], got"):
        load_features(np.zeros(shape, dtype=np.float32), visual_dim=4)


def test_load_features_wrong_dimension():
    with pytest.raises(FeatureError, match="expected feature dimension 1024, got 500"):
        load_features(np.zeros((5, 500), dtype=np.float32))


def test_load_features_zero_clips():
    with pytest.raises(FeatureError, match="zero clips"):
        load_features(np.zeros((0, 1024), dtype=np.float32))
    with pytest.raises(FeatureError, match="zero clips"):
        load_features(np.zeros((0, 1, 1024), dtype=np.float32))


def test_load_features_non_finite():
    features = np.zeros((8, 4), dtype=np.float32)
    features[3, 2] = np.nan
    features[5, 0] = np.inf
    features[5, 1] = -np.inf
    with pytest.raises(FeatureError, match="3 NaN/inf values, first in clip 3"):
        load_features(features, visual_dim=4)
    overflow = np.zeros((2, 4))
    overflow[1, 3] = 1e39  # finite in float64, inf in float32
    with pytest.raises(FeatureError, match="1 NaN/inf values, first in clip 1"):
        load_features(overflow, visual_dim=4)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, object, "U3"])
def test_load_features_non_numeric(dtype):
    with pytest.raises(FeatureError, match="expected real numbers"):
        load_features(np.zeros((2, 4), dtype=dtype), visual_dim=4)


def test_time_to_index_uses_float32_unit_boundaries():
    """3 units of a 10 s video: unit ends e0 = 1/3 * 10 and e1 = 2/3 * 10, each step rounded to float32
    (3.3333335, 6.666667: above 10/3 and 20/3). For a moment [0, x] with e0 < x < e1, IoU([0, e0]) =
    e0 / x and IoU([0, e1]) = x / e1 tie at x = sqrt(e0 * e1). An x between the float64 tie point and
    the (higher) float32 one picks (0, 0) with float32 boundaries, as the original does, where float64
    boundaries would pick (0, 1)."""
    f32 = np.float32
    e0, e1 = float(f32(f32(1) / f32(3)) * f32(10)), float(f32(f32(2) / f32(3)) * f32(10))
    tie32, tie64 = np.sqrt(e0 * e1), np.sqrt(10 / 3 * 20 / 3)
    assert tie64 < tie32
    assert time_to_index(0.0, (tie32 + tie64) / 2, 3, 10.0) == (0, 0)
    assert time_to_index(0.0, tie32 + 1e-6, 3, 10.0) == (0, 1) and time_to_index(0.0, tie64 - 1e-6, 3, 10.0) == (0, 0)


def test_index_to_time_rejects_a_start_past_the_last_unit():
    with pytest.raises(ValueError, match="out of range"):
        index_to_time(4, 0, 4, 8.0)


def test_sample_features_of_integers_gives_float64_means():
    # 6 clips to 4: bounds round([0, 1.5, 3, 4.5, 6]) = [0, 2, 3, 4, 6], capped at 5: rows [0, 2), [2, 3),
    # [3, 4), [4, 5)
    out = sample_features(np.arange(12).reshape(6, 2), 4)
    assert out.dtype == np.float64 and out.tolist() == [[1.0, 2.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]


def _sources(tmp_path, array):
    """The same features as each kind of source, with the name its errors give it."""
    path = tmp_path / "v.npy"
    np.save(path, array)
    return [(str(path), repr(str(path))), (array, "features"), (torch.from_numpy(array), "features"),
            (array.tolist(), "features")]


def test_limits_and_shapes_are_checked_for_every_kind_of_source(tmp_path):
    """Each kind of source obeys max_clips and max_bytes (bytes as stored: 4 a float32 value, 8 a
    list's value) at their own values, and names itself in the message."""
    d = 6
    array = np.ones((3, d), np.float32)
    for (source, name), stored in zip(_sources(tmp_path, array), (4, 4, 4, 8)):
        nbytes = 3 * d * stored
        assert load_features(source, d, max_clips=3, max_bytes=nbytes).shape == (3, d)
        with pytest.raises(FeatureError) as err:
            load_features(source, d, max_clips=2)
        assert str(err.value) == f"{name}: 3 clips, more than the limit of 2"
        with pytest.raises(FeatureError) as err:
            load_features(source, d, max_bytes=nbytes - 1)
        assert str(err.value) == f"{name}: {nbytes} bytes of features, more than the limit of {nbytes - 1}"
    for source, name in _sources(tmp_path, np.ones((3, d, 1), np.float32)):
        if not isinstance(source, list):  # a list's clips must be lists of numbers: its own message
            with pytest.raises(FeatureError) as err:
                load_features(source, d)
            assert str(err.value) == f"{name}: expected shape [T, {d}], got [3, {d}, 1]"
    for source, name in _sources(tmp_path, np.ones((3, d), np.complex64))[:2]:
        with pytest.raises(FeatureError) as err:
            load_features(source, d)
        assert str(err.value) == f"{name}: expected real numbers, got dtype complex64"
    with pytest.raises(FeatureError) as err:
        load_features({"a": 1}, d)
    assert str(err.value) == f"features must be a [T, {d}] array, a nested list of numbers or a .npy path, got dict"


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_files_of_every_format_version_and_fortran_order_load(tmp_path, version):
    array = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    for layout in (array, np.asfortranarray(array)):
        path = tmp_path / "v.npy"
        with open(path, "wb") as f:
            np.lib.format.write_array(f, layout, version=version)
        assert np.array_equal(load_features(str(path), 6), array)


def test_path_errors_say_exactly_what_is_wrong(tmp_path):
    from engine.data.features import resolve_feature_path

    for path, message in [(b"v.npy", "features path must be text, not bytes"),
                          ("a\0b.npy", "features path contains a NUL byte"),
                          (5, "features path 5 is not a usable path")]:
        with pytest.raises(FeatureError) as err:
            resolve_feature_path(path)
        assert str(err.value) == message and type(err.value) is FeatureError
    missing, folder = str(tmp_path / "missing.npy"), str(tmp_path)
    for path, message in [(missing, f"{missing!r}: feature file not found"),
                          (folder, f"{folder!r}: not a regular file")]:
        with pytest.raises(FeatureError) as err:
            load_features(path, 6)
        assert str(err.value) == message and type(err.value) is FeatureError


def test_a_feature_file_is_keyed_and_read_through_one_open_file(tmp_path, monkeypatch):
    """The link `swap.npy` flips to the other file each time a path is resolved: the features a
    request gets, and the key they are cached under, are still those of one and the same file, so
    a later request naming `first.npy` itself gets first.npy's features (issue 24, case 5)."""
    import os

    import engine.data.features as features_module
    from engine.limits import Limits
    from engine.prepare import video_features
    from reference.config import SeqPANConfig

    cfg = SeqPANConfig(num_words=4, num_chars=4, visual_dim=2, max_pos_len=8)
    first, second = np.full((3, 2), 1.0, np.float32), np.full((3, 2), 2.0, np.float32)
    np.save(tmp_path / "first.npy", first)
    np.save(tmp_path / "second.npy", second)
    os.symlink("first.npy", tmp_path / "swap.npy")
    resolve = features_module.resolve_feature_path

    def resolve_after_a_flip(path, root=None):
        target = "second.npy" if os.readlink(tmp_path / "swap.npy") == "first.npy" else "first.npy"
        os.symlink(target, tmp_path / "swap.tmp")
        os.replace(tmp_path / "swap.tmp", tmp_path / "swap.npy")
        return resolve(path, root)

    monkeypatch.setattr(features_module, "resolve_feature_path", resolve_after_a_flip)
    cache: dict = {}
    got = {name: video_features(name, None, cfg, cache, Limits(), tmp_path, True)
           for name in ("swap.npy", "first.npy", "second.npy")}
    assert torch.equal(got["first.npy"][0], torch.from_numpy(first))
    assert torch.equal(got["second.npy"][0], torch.from_numpy(second))
    swapped, key = got["swap.npy"]
    same = "first.npy" if torch.equal(swapped, torch.from_numpy(first)) else "second.npy"
    assert torch.equal(swapped, got[same][0]) and key == got[same][1]  # one file, one key
    stat = os.stat(tmp_path / same)
    assert key == ("file", (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
