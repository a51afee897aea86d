"""The base of every error caused by what a user gave (a request, a file, an option, weights)."""


class SeqPANError(Exception):
    """Bad input rather than a bug: reported in one line (the CLI exits 2), never as a traceback.
    Every layer's input errors derive from it, so a caller catches this one class."""
