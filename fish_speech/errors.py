"""Errors that the command line reports as one clear line instead of a traceback."""


class UserError(Exception):
    """Bad input or set-up that the user can fix: the message names the file and the problem."""
