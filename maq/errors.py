"""The one exception type every user-facing error of MAQ derives from."""


class MAQError(ValueError):
    """A user-facing error: bad input file, bad argument, unsupported model.

    The message is one line naming the file / tensor / key and what was expected.
    """


class FormatError(MAQError):
    """A MAQ tensor or GGUF file does not follow the format (docs/FORMAT.md)."""
