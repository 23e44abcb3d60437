"""Channels: Sionna 3GPP TR 38.901 UMa, UMi, RMa (moving users) and CDL links, or i.i.d. Rayleigh (Clarke time evolution)."""
from .source import ChannelSource

__all__ = ["ChannelSource"]
