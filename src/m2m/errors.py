"""The project's error for bad input, reported as one clear line (no traceback) by the command line."""


class M2MError(ValueError):
    """Bad input: a file, row, column or param that is not what the pipeline needs. The message names it."""
