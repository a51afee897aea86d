"""`python -m engine.cli ...`: the same as the `seqpan` console script."""
import sys

from engine.cli import main

sys.exit(main())
