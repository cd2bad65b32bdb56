"""One exception type for every user-facing error, so the CLI can print it without a traceback."""


class DdflowError(Exception):
    """Bad input or a broken file: the message names the key or path and what was expected."""
