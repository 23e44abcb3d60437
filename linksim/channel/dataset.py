"""Export channel datasets to HDF5 (h5py), with the scenario and seed in the file's attributes."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import LinksimError
from ..scenario import Scenario
from .source import ChannelSource

LAYOUT = "h[drop, time, user, bs_antenna, subcarrier] complex64; user k <-> BS antenna m gain"


def export_dataset(scenario: Scenario, n: int, out: str | Path, num_users: int, num_time: int,
                   speed_kmh: float | tuple[float, float] | None = None, seed: int | None = None,
                   progress: bool = True, attrs: dict | None = None, desc: str | None = None) -> Path:
    """Write ``n`` drops ``[n, num_time, num_users, M, F]`` to ``out`` (dataset ``h``), streamed in
    batches; the scenario, seed, speeds and ``attrs`` (e.g. the task) go to the file's attributes.
    Written to a temporary file of the process's own and renamed when complete (so processes that
    write the same file at once do not collide); an interrupted or failed export removes it and
    leaves ``out`` as it was (a re-run starts over).

    :param desc: the progress bar's label (default ``dataset <file name>``)
    """
    import h5py
    from tqdm.auto import tqdm

    if n <= 0:
        raise LinksimError(f"--n must be > 0, got {n}")
    k, t = int(num_users), int(num_time)
    src = ChannelSource(scenario, seed=seed)
    out = Path(out)
    if not out.parent.exists():
        raise LinksimError(f"--out {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise LinksimError(f"--out {out}: is a folder; give the file to write, e.g. {out / 'channels.h5'}")
    # a name of this process's own: two trainers that need the same cached pool may both write it,
    # and the second rename replaces the first with identical drops
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    m, f = scenario.channel.num_bs_antennas, scenario.channel.num_subcarriers
    batch = scenario.run.batch_size
    try:
        with h5py.File(tmp, "w") as h5, tqdm(total=n, unit="drop", desc=desc or f"dataset {out.name}",
                                            disable=not progress) as bar:
            ds = h5.create_dataset("h", shape=(n, t, k, m, f), dtype="complex64",
                                   chunks=(min(batch, n), t, k, m, f))
            done = 0
            for h in src.stream(n, batch, speed_kmh=speed_kmh, num_users=k, num_time=t):
                ds[done:done + h.shape[0]] = h.to(torch.complex64).cpu().numpy()
                done += h.shape[0]
                bar.update(h.shape[0])
            h5.attrs.update({"scenario": scenario.source, "scenario_file": scenario.path,
                             "scenario_hash": scenario.hash, "seed": src.seed, **(attrs or {}),
                             "speed_kmh": str(speed_kmh if speed_kmh is not None else scenario.channel.speed_kmh),
                             "sample_spacing_s": scenario.channel.sample_spacing_s, "layout": LAYOUT})
        os.replace(tmp, out)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise LinksimError(f"--out {out}: cannot write it ({why})") from None
    finally:                     # interrupted or failed: no hidden partial file is left behind
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
    return out
