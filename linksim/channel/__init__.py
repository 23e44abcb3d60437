"""Channels: Sionna 3GPP UMa with moving users, or i.i.d. Rayleigh (Clarke time evolution)."""
from .source import ChannelSource

__all__ = ["ChannelSource"]
