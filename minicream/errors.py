"""User-facing errors: anything raised as MinicreamError is printed by the CLI as one line, exit code 2."""


class MinicreamError(Exception):
    """An error caused by the user's input (bad argument, missing file, corrupt weights...).

    The message must be one line that says what is wrong and, where possible, how to fix it.
    """
