"""The window rule against the original's loops, transcribed from VSLNet prepare/extract_*.py."""
import pytest

from engine.video.windows import WindowStream, plan_windows


def original_windows(t, strides):
    """extract_charades.py / extract_features(): [start, end) of each window of a t-frame tensor."""
    out = []
    for start in range(0, t, strides):
        end = min(t - 1, start + strides)
        if end - start < strides:
            start = max(0, end - strides)
        out.append((start, end))
    return out


def original_chunked_windows(num_frames, strides, chunk):
    """extract_activitynet.py / extract_tacos.py: videos of >= chunk frames load 1-based frame
    files in chunks of `chunk`, a short last chunk widened to `strides` frames."""
    if num_frames < chunk:
        return original_windows(num_frames, strides)
    out = []
    for start_idx in range(1, num_frames, chunk):
        end_idx = min(start_idx + chunk, num_frames + 1)
        cur_num_frames = end_idx - start_idx
        if cur_num_frames < strides:
            cur_num_frames = strides
            start_idx = end_idx - cur_num_frames
        out += [(start_idx - 1 + a, start_idx - 1 + b) for a, b in original_windows(cur_num_frames, strides)]
    return out


def streamed(t, s, chunk):
    """WindowStream's windows, checking that no window needs a frame it said could be dropped."""
    stream, out, dropped_before = WindowStream(s, chunk), [], 0
    for _ in range(t):
        for start, end in stream.push():
            assert start >= dropped_before
            out.append((start, end))
        dropped_before = stream.keep_from
    for start, end in stream.finish():
        assert start >= dropped_before
        out.append((start, end))
    return out


@pytest.mark.parametrize("s", [24, 16, 5])
def test_unchunked_rule_is_the_originals(s):
    for t in range(1, 130):
        assert plan_windows(t, s) == original_windows(t, s), t
        assert streamed(t, s, None) == original_windows(t, s), t


@pytest.mark.parametrize("s,chunk", [(16, 40), (5, 12), (4, 13)])
def test_chunked_rule_is_the_originals(s, chunk):
    for t in range(1, 7 * chunk):
        assert plan_windows(t, s, chunk) == original_chunked_windows(t, s, chunk), t
        assert streamed(t, s, chunk) == original_chunked_windows(t, s, chunk), t


def test_hand_computed_examples():
    assert plan_windows(50, 24) == [(0, 24), (24, 48), (25, 49)]  # last frame unused, tail shifted back
    assert plan_windows(48, 24) == [(0, 24), (23, 47)]
    assert plan_windows(49, 24) == [(0, 24), (24, 48), (24, 48)]  # the tail repeats a window
    assert plan_windows(12, 24) == [(0, 11)]                        # shorter than one window
    # ActivityNet: 10001 frames are one chunk of 10000 (the last frame never loaded)
    assert plan_windows(10001, 16, 10000)[-2:] == [(9968, 9984), (9983, 9999)]


def test_a_stream_without_frames_has_no_windows():
    for chunk in (None, 12):
        assert WindowStream(5, chunk).finish() == [] and WindowStream(5, chunk).keep_from == 0


def test_what_a_stream_keeps_by_hand():
    stream = WindowStream(4)
    kept = []
    for _ in range(10):
        stream.push()
        kept.append(stream.keep_from)
    # the earlier of the next full window's start (0; 4 from the 5th frame; 8 from the 9th) and the
    # first frame the tail may need (t - s - 1 after t frames)
    assert kept == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
