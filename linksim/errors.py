"""The one exception type users see: a bad input, reported as one line by the CLI (exit 2)."""


class LinksimError(Exception):
    """Bad input (file, key, value, block name, ...). The message is one line naming the culprit."""
