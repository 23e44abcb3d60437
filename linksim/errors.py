"""The one exception type users see: a bad input, reported as one line by the CLI (exit 2)."""


class LinksimError(ValueError):
    """Bad input (file, key, value, block name, ...). The message is one line naming the culprit.

    A ``ValueError`` (a bad value, as Python's own): code that guards a call with
    ``except ValueError`` also catches it.
    """
