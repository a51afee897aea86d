"""The error every user-input problem of the video path raises (one line, no traceback at the CLI)."""
from reference.errors import SeqPANError


class VideoError(SeqPANError, ValueError):
    """A video or weights file that cannot be used: not a video, no frames, too short, wrong weights."""
