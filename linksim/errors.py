"""The one exception type users see: a bad input, reported as one line by the CLI (exit 2)."""


class LinksimError(ValueError):
    """Bad input (file, key, value, block name, ...). The message is one line naming the culprit.

    A ``ValueError`` (a bad value, as Python's own): code that guards a call with
    ``except ValueError`` also catches it.
    """


def read_text(path) -> str:
    """The text of the file ``path``, which must be UTF-8: anything else (a Latin-1 byte, a binary
    file) is a ``LinksimError`` naming the file and the first bad byte's offset, not a
    ``UnicodeDecodeError`` traceback.

    :param path: str or ``pathlib.Path``. The file (read errors such as a missing file stay ``OSError``).
    :output text: str. The decoded text.

    .. rubric:: Examples

    .. code-block:: python

        from linksim.errors import read_text
        text = read_text("scenarios/quick.toml")
    """
    from pathlib import Path

    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LinksimError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                           "save it as UTF-8") from None
