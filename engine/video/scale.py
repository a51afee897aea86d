"""The original's pixel scaling `(x / 255.) * 2 - 1` (float64, then stored as float32) as a table
over the 256 uint8 values, so that scaling on any device gives exactly the original's numbers."""
import numpy as np

UNIT_RANGE = ((np.arange(256) / 255.0) * 2 - 1).astype(np.float32)
