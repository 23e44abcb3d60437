"""Swappable blocks (precoders, detectors, predictors, reference curves) behind one function.

``get(name, kind=..., scenario=...)`` turns a name into a block: a registered short name
(``zf``, ``lmmse``, ``ar``, ``dpc_bound``, ...; :mod:`linksim.registry`) or a prefixed name whose
resolver is registered by a higher layer: ``agent:PATH`` (a trained agent folder, usable as any
kind it was trained for; :mod:`linksim.agents` registers it). Importing this package imports the
built-in block modules once, which register themselves; it imports nothing above them.

Example::

    import linksim
    sc = linksim.load_scenario("scenarios/quick.toml")
    H = linksim.ChannelSource(sc, seed=0).sample(8, num_users=4, num_time=1)   # [8,1,4,16,48]
    wmmse = linksim.blocks.get("wmmse", kind="precoder", scenario=sc)
    w = wmmse(H[:, 0, :, :, 24], 1.0, 0.1)                                      # [8,16,4] complex64
    det = linksim.blocks.get("agent:agents/oampnet", kind="detector", scenario=sc)
"""
from __future__ import annotations

from . import predictors, precoders, detectors, sensing  # noqa: F401  (register the kinds and blocks, in this order)
from ..errors import LinksimError
from ..registry import REFERENCE, RESOLVERS, BlockSpec, block_kinds, block_names, block_spec
from .base import Block

AGENT_PREFIX = "agent:"


def get(name: str, kind: str | None = None, scenario=None, **options):
    """The block called ``name``, checked to be usable as a ``kind`` block.

    :param name: a registered name or ``agent:PATH``
    :param kind: ``precoder`` | ``detector`` | ``predictor``; a reference block that serves this
        kind is accepted. ``None``: any registered block (agents need a kind).
    :param scenario: a :class:`~linksim.Scenario`: supplies ``num_bits_per_symbol``, ``horizon``,
        ``precision`` and ``device`` (from ``[run]``), is passed as ``scenario=`` to blocks whose
        constructor takes one (``pad``: the array shape; ``wiener``: its channel pool) and, for
        agents, gives the sizes to check
    :param options: constructor options (override the scenario's); an option the block does not
        take is a one-line error naming it and the ones it takes
    :output block: a callable ``torch.nn.Module`` with ``.kind`` and ``.serves``
    """
    kinds = block_kinds()
    if kind is not None and kind not in kinds:
        raise LinksimError(f"kind {kind!r}: choose from {', '.join(kinds)}")
    for prefix, loader in RESOLVERS.items():
        if name.startswith(prefix):
            if kind is None or scenario is None:
                raise LinksimError(f"{name}: a {prefix}NAME block needs kind= and scenario= to be loaded")
            return loader(name[len(prefix):], kind, scenario, **options)
    if ":" in name:
        raise LinksimError(f"block '{name}': unknown prefix '{name.split(':')[0]}:' (known: "
                           f"{', '.join(RESOLVERS) or 'none'}; agents need `import linksim`)")
    spec = block_spec(name)
    if kind is not None and spec.serves != kind:
        what = f"a reference for {spec.serves}s" if spec.kind == REFERENCE else f"a {spec.kind}"
        raise LinksimError(f"block '{name}' is {what}; this task needs a {kind}")
    allowed = spec.options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise LinksimError(f"block '{name}': unknown option(s) {', '.join(unknown)} (it takes: "
                           f"{', '.join(o for o in allowed if o != 'scenario') or 'none'})")
    defaults = {}
    if scenario is not None:
        defaults = {"num_bits_per_symbol": scenario.detection.bits_per_symbol,
                    "horizon": scenario.prediction.horizon,
                    "precision": scenario.run.precision, "device": scenario.run.device,
                    "scenario": scenario}
    return spec.factory(**{k: v for k, v in (defaults | options).items() if k in allowed})


def names(kind: str | None = None) -> list[str]:
    """Registered block names (of one kind: ``precoder``, ``detector``, ``predictor``, ``reference``)."""
    return block_names(kind)


def spec(name: str) -> BlockSpec:
    """The registry entry of ``name``."""
    return block_spec(name)


__all__ = ["AGENT_PREFIX", "Block", "BlockSpec", "get", "names", "spec"]
