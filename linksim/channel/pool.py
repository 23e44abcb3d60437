"""Channel pools: drops drawn once from :class:`~linksim.channel.ChannelSource` and cached as HDF5,
or read back from an exported dataset (``linksim dataset``). The channel layer knows no task: a
caller names the users, time samples and speeds it needs, and a ``tag`` for the file name."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import derive_seed
from ..errors import LinksimError
from ..scenario import Scenario

# Bumped when the drops a seed gives change (2: 38.901 indoor distances drawn from the batch's seed),
# so that a cached pool of an older generator is never read back as the current one.
GENERATOR_VERSION = 2


def channel_pool(sc: Scenario, n: int, seed: int, speed_kmh, cache: Path, num_users: int, num_time: int,
                 tag: str, progress: bool = True) -> torch.Tensor:
    """``n`` drops ``[n, num_time, num_users, M, F]`` complex64, cached in ``cache/``.

    :param sc: the scenario (its channel; its hash names the file)
    :param n: drops
    :param seed: the pool's seed
    :param speed_kmh: a speed or ``(low, high)`` (uniform per user) [km/h]
    :param cache: folder of the cached ``.h5`` files (created when needed)
    :param num_users: K
    :param num_time: time samples per drop
    :param tag: file-name prefix (the task); the file is ``TAG-<hash of sc, tag, n, seed, speed,
        generator version>.h5``
    """
    import h5py

    from .dataset import export_dataset

    name = f"{tag}-{derive_seed(sc.hash, tag, n, seed, speed_kmh, GENERATOR_VERSION):08x}.h5"
    path = Path(cache) / name
    if not path.is_file():
        Path(cache).mkdir(parents=True, exist_ok=True)
        export_dataset(sc, n, path, num_users=num_users, num_time=num_time, speed_kmh=speed_kmh, seed=seed,
                       progress=progress, attrs={"task": tag}, desc=f"{tag} channel pool (seed {seed})")
    with h5py.File(path) as f:
        return torch.from_numpy(f["h"][:])


def dataset_pool(path: str | Path, sc: Scenario, tag: str) -> torch.Tensor:
    """The channels of an exported dataset, checked against ``sc`` and the task ``tag`` it was
    exported for (``linksim dataset --task TAG``)."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise LinksimError(f"train.dataset: file not found: {p}")
    with h5py.File(p) as f:
        if "h" not in f:
            raise LinksimError(f"train.dataset: {p} has no dataset 'h' (export it with `linksim dataset`)")
        if f.attrs.get("task") != tag:
            raise LinksimError(f"train.dataset: {p} holds {f.attrs.get('task')!r} channels, this agent "
                               f"needs {tag!r}")
        if f.attrs.get("scenario_hash") != sc.hash:
            raise LinksimError(f"train.dataset: {p} was exported from another scenario "
                               f"(hash {f.attrs.get('scenario_hash')} != {sc.hash})")
        return torch.from_numpy(f["h"][:])
