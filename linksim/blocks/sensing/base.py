"""What the sensing blocks share: the modality check and the labelled drops they fit on."""
from __future__ import annotations

import torch

from ...config import derive_seed
from ...errors import LinksimError
from ..base import Block


class SensingBlock(Block):
    """A block of a sensing task: ``task`` names its scenario table, ``needs`` the modalities it
    reads (``needs_any``: it reads one of them, the first listed that the table has)."""

    task = ""
    needs: tuple[str, ...] = ()
    needs_any: tuple[str, ...] = ()

    def check_scenario(self, scenario) -> None:
        """Refuse, in one line, a scenario whose task table does not list what the block reads."""
        from ...channel.modalities import parse_modalities

        have = parse_modalities(getattr(scenario, self.task).modalities)
        missing = [m for m in self.needs if m not in have]
        if self.needs_any and not any(m in have for m in self.needs_any):
            missing.append(" or ".join(self.needs_any))
        if missing:
            raise LinksimError(f"block '{self.name}' reads modality {missing[0]}, which "
                               f"[{self.task}] modalities = {','.join(have)!r} does not list")

    def pick(self, obs: dict, *names: str) -> torch.Tensor:
        """The first of ``names`` present in ``obs``, cast to the block's device and dtype."""
        for n in names:
            if n in obs:
                x = self.cast(obs[n])
                return x if x.is_complex() else x.to(self.dtype)
        raise LinksimError(f"block '{self.name}': its input has none of {', '.join(names)} "
                           f"(it has {', '.join(obs)})")


def fit_drops(scenario, task: str, n: int, seed: int, what: str) -> tuple[dict, dict]:
    """``n`` labelled drops of ``task``'s table (its users, history, SNR, GNSS error, LOS rule)
    from a seed of ``seed`` and ``what``: the training data a block fits on (CPU, single)."""
    from ...channel.modalities import observed_drops

    if scenario is None:
        raise LinksimError(f"{what}: needs a scenario to draw its training drops from")
    t = getattr(scenario, task)
    los = "random" if getattr(t, "los", "3gpp") == "3gpp" else scenario.channel.los
    return observed_drops(scenario, n, derive_seed(seed, what, "fit"), t.num_users, getattr(t, "history", 1),
                          t.snr_db, t.gnss_std_m, los=los)


def positive_int(value, what: str) -> int:
    if int(value) != value or value < 1:
        raise LinksimError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)
