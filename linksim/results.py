"""Results store: a tidy ``results.csv`` (one row per block, point and metric) and ``meta.json``.

One writer (the sweep's driver) appends each finished point's rows to the CSV in one write and
syncs it, so a killed sweep (even ``kill -9``) loses at most the point in progress and a re-run
skips finished points; :meth:`ResultsStore.finish` then rewrites the file sorted, atomically
(temp file + rename). A file that does not read back as a results table is refused, never
overwritten. No timestamps or timings go into the CSV (equal seeds give identical files); they go
to meta.json, with the provenance (:func:`versions`, :func:`git_commit`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from .errors import LinksimError

COLUMNS = ("task", "block", "x_name", "x", "metric", "value", "ci_low", "ci_high", "n")


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process's umask: the permissions ``open()`` gives a new file (0o644
    under the usual umask 022), for files made another way (``tempfile.mkstemp`` gives 0o600).

    :param mode: the permissions asked for
    :output mode: int, e.g. ``0o644``

    .. rubric:: Examples

    .. code-block:: python

        from linksim.results import umask_mode
        oct(umask_mode())          # '0o644' under umask 022
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return mode & ~mask


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never a partial one.
    The file gets the permissions of any new file (the umask's, as figures do), not
    ``mkstemp``'s private 0o600.

    :param path: the file to write (its folder must exist)
    :param text: the whole new content

    .. rubric:: Examples

    .. code-block:: python

        from linksim.results import atomic_write
        atomic_write(Path("results/pre/meta.json"), "{}\n")      # 0o644 under umask 022
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            os.fchmod(f.fileno(), umask_mode())
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def _key(row: dict):
    return (row["task"], row["block"], row["x_name"], float(row["x"]), row["metric"])


class ResultsStore:
    """``DIR/results.csv`` + ``DIR/meta.json``."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.csv = self.dir / "results.csv"
        self.meta_path = self.dir / "meta.json"
        self.rows: list[dict] = []
        self._done: set = set()
        if self.csv.exists():
            self.rows = read_rows(self.csv, repair=True)
            self._done = {_point(r) for r in self.rows}

    def check_writable(self) -> None:
        """Create the folder if needed and write, then remove, a probe file in it, so that an
        unwritable ``--out`` is refused before anything is computed."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.dir, prefix=".probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise LinksimError(f"--out {self.dir}: not a writable folder ({e.strerror or e})") from None

    def done(self, task: str, block: str, x_name: str, x: float) -> bool:
        """Whether the point ``x_name = x`` of ``block`` has rows."""
        return (task, block, x_name, float(x)) in self._done

    def add(self, rows: list[dict]) -> None:
        """Append the rows of a finished point to the CSV in one write, synced to disk."""
        self.dir.mkdir(parents=True, exist_ok=True)
        rows = [{c: _fmt(r[c]) for c in COLUMNS} for r in rows]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        if not self.csv.exists() or self.csv.stat().st_size == 0:
            w.writeheader()
        w.writerows(rows)
        fd = os.open(self.csv, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)   # less the umask
        try:
            os.write(fd, buf.getvalue().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows += rows
        self._done |= {_point(r) for r in rows}

    def finish(self) -> None:
        """Rewrite the CSV sorted (and without repeated keys, the last one kept), atomically."""
        if not self.rows:
            return
        new = {_key(r): r for r in self.rows}
        rows = [new[k] for k in sorted(new)]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        if rows != self.rows or self.csv.read_text() != buf.getvalue():
            atomic_write(self.csv, buf.getvalue())
        self.rows = rows

    def meta(self) -> dict:
        if not self.meta_path.exists():
            return {}
        try:
            return json.loads(self.meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LinksimError(f"{self.meta_path}: not valid JSON ({e})") from None

    def write_meta(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _point(row: dict):
    return row["task"], row["block"], row["x_name"], float(row["x"])


_NUMERIC = ("x", "value", "ci_low", "ci_high", "n")


def read_rows(path: str | Path, repair: bool = False) -> list[dict]:
    """Rows of a results.csv, checked: the contract's columns, a complete line each, numbers
    where numbers belong. A damaged file is a one-line error naming the file and the line.

    :param repair: drop an incomplete last line (a write cut by a kill) from the file first
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LinksimError(f"{path}: not a linksim results file (not UTF-8 text); move it away to "
                           "start over") from None
    if text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        if repair:
            atomic_write(path, text[:cut])
        text = text[:cut]
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise LinksimError(f"{path}: not a linksim results file (missing columns: {', '.join(missing)})")
    rows = []
    for i, r in enumerate(reader, start=2):
        ok = None not in r and all(r.get(c) not in (None, "") for c in ("task", "block", "x_name", "metric"))
        if ok:
            try:
                ok = not math.isnan(float(r["x"])) and all(_number(r[c]) for c in _NUMERIC)
            except ValueError:
                ok = False
        if not ok:
            raise LinksimError(f"{path}: line {i} is not a results row ({','.join(map(str, r.values()))[:80]!r}); "
                               "the file is damaged: move it away (or delete that line) and re-run to resume")
        rows.append(r)
    return rows


def _number(v: str) -> bool:
    float(v)                 # nan is allowed (a metric without samples), garbage is not
    return True


def versions(*packages: str) -> dict:
    """Installed versions of ``packages`` (None when absent) and Python's."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str:
    """The linksim checkout's commit, or ``"unknown"``."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
