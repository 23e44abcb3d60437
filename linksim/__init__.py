"""linksim: link-level OFDM multi-user MISO simulator on Sionna (PyTorch).

Public API::

    import linksim
    sc = linksim.load_scenario("scenarios/quick.toml")
    H = linksim.ChannelSource(sc, seed=0).sample(8)      # complex64 [8, 20, 4, 16, 48]
    w = linksim.blocks.get("wmmse")(H[:, 0, :, :, 24], 1.0, 0.1)   # [8, 16, 4]
"""
from . import blocks
from .channel import ChannelSource
from .config import Config
from .errors import LinksimError
from .scenario import Scenario, load_scenario

__all__ = ["ChannelSource", "Config", "LinksimError", "Scenario", "blocks", "load_scenario"]
__version__ = "0.1.0"
