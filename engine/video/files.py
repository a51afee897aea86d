"""Which files count as videos (by name), for the commands and the server that list folders."""
from __future__ import annotations

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
