"""The annotation files shipped in `engine/data/annotations/` (sources and licences in its README)."""
from __future__ import annotations

from pathlib import Path

ANNOTATIONS = Path(__file__).resolve().parent / "annotations"
CHARADES_TEST = ANNOTATIONS / "charades_sta_test.txt"  # Charades-STA test: `vid start end##sentence`
CHARADES_DURATIONS = ANNOTATIONS / "charades_sta_test_durations.json"  # {vid: seconds}
ACTIVITYNET_VAL = ANNOTATIONS / "activitynet_val_1.json"  # ActivityNet Captions val_1
