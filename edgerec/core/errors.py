"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback."""


class EdgerecError(Exception):
    """Bad input or a state the user can act on. The message names the problem and the file;
    the CLI prints it as its one line, a program can catch it.

    Examples:
        A file that is not there:

        >>> try:
        ...     edgerec.data(work / "nowhere.csv", work / "unused")
        ... except edgerec.EdgerecError as exc:
        ...     print(exc)
        /...nowhere.csv: no such file
    """

    exit_code = 2
