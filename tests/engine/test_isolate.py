"""Retry in halves (engine.isolate): only an item that fails alone gets the failure."""
from engine.isolate import isolating


def test_only_the_item_that_fails_alone_gets_the_failure_and_each_split_is_told():
    batches, splits = [], []

    def run(batch):
        batches.append(list(batch))
        if 5 in batch:
            raise ValueError("five")
        return [f"ok {i}" for i in batch]

    out = isolating(list(range(8)), run, lambda item, err: f"failed {item}: {err}",
                    lambda size, err: splits.append((size, str(err))))
    assert out == [f"ok {i}" for i in range(5)] + ["failed 5: five", "ok 6", "ok 7"]
    assert batches == [list(range(8)), [0, 1, 2, 3], [4, 5, 6, 7], [4, 5], [4], [5], [6, 7]]
    assert splits == [(8, "five"), (4, "five"), (2, "five")]


def test_a_batch_that_runs_is_run_once():
    calls = []
    assert isolating([1, 2, 3], lambda b: calls.append(b) or [x * 2 for x in b], lambda *_: None) == [2, 4, 6]
    assert calls == [[1, 2, 3]]
