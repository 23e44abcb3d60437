"""Results store: a tidy ``results.csv`` (one row per block, point and metric) and ``meta.json``.

Rows are kept sorted and the file is rewritten atomically (temp file + rename) after every finished
point, so a killed sweep loses at most the point in progress and a re-run skips finished points.
No timestamps or timings go into the CSV (equal seeds give identical files); they go to meta.json.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from .errors import LinksimError

COLUMNS = ("task", "block", "x_name", "x", "metric", "value", "ci_low", "ci_high", "n")


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
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
        if self.csv.exists():
            self.rows = read_rows(self.csv)

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
        return any(r["task"] == task and r["block"] == block and r["x_name"] == x_name
                   and float(r["x"]) == float(x) for r in self.rows)

    def add(self, rows: list[dict]) -> None:
        """Add the rows of finished points and rewrite the CSV atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        new = {_key(r): {c: _fmt(r[c]) for c in COLUMNS} for r in self.rows + rows}
        self.rows = [new[k] for k in sorted(new)]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write(self.csv, buf.getvalue())

    def meta(self) -> dict:
        if not self.meta_path.exists():
            return {}
        try:
            return json.loads(self.meta_path.read_text())
        except json.JSONDecodeError as e:
            raise LinksimError(f"{self.meta_path}: not valid JSON ({e})") from None

    def write_meta(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a results.csv; a file without the contract's columns is a clear error."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LinksimError(f"{path}: not a linksim results file (missing columns: {', '.join(missing)})")
        return list(reader)
