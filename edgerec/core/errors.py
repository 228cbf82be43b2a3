"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback."""


class EdgerecError(Exception):
    """Bad input or a state the user can act on. The message names the problem and the file."""

    exit_code = 2
