"""linksim: link-level OFDM multi-user MISO simulator on Sionna (PyTorch).

Public API::

    import linksim
    sc = linksim.load_scenario("scenarios/quick.toml")
    H = linksim.ChannelSource(sc, seed=0).sample(8)      # complex64 [8, 20, 4, 16, 48]
    wmmse = linksim.blocks.get("wmmse", kind="precoder", scenario=sc)
    w = wmmse(H[:, 0, :, :, 24], 1.0, 0.1)               # complex64 [8, 16, 4]

``linksim.config`` holds the default seed, device and precision of blocks built without a
scenario (as ``sionna.phy.config``).
"""
from . import blocks  # first the layers from the bottom: blocks, then the tasks, then the agents
from . import chains, agents, registry
from .channel import ChannelSource
from .config import Config, config
from .errors import LinksimError
from .scenario import Scenario, load_scenario

__all__ = ["ChannelSource", "Config", "LinksimError", "Scenario", "agents", "blocks", "config",
           "load_scenario", "registry"]
__version__ = "0.1.0"


def _load_plugins() -> None:
    """Import the modules named by the ``linksim.plugins`` entry points of installed packages: a
    package adds tasks, blocks or architectures that register themselves, and the CLI sees them."""
    from importlib.metadata import entry_points
    for ep in entry_points(group="linksim.plugins"):
        ep.load()


_load_plugins()
