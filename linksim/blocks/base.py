"""What every block shares: precision and device, taken once at construction, inputs cast once.

As Sionna's ``Block``: a block takes ``precision`` (``"single"`` | ``"double"``) and ``device``;
``None`` means the value of :data:`linksim.config`. ``dtype``/``cdtype`` are the real/complex
dtypes of its outputs, and :meth:`Block.cast` moves tensor inputs to the block's device and
complex ones to ``cdtype`` on entry (a Python float stays a float: blocks turn it into a tensor
on their device themselves, so ``p_tx = 0.1`` is not rounded to float32 on the way in).

``kind`` and ``serves`` are set by :func:`linksim.registry.register_block`.
"""
from __future__ import annotations

import torch

from ..config import check_device, check_precision, config, dtypes


class Block(torch.nn.Module):
    """Base of linksim's classical blocks.

    :param precision: ``"single"`` (complex64 outputs) or ``"double"`` (complex128); ``None``:
        ``linksim.config.precision``
    :param device: where inputs are moved and outputs live; ``None``: ``linksim.config.device``
    """

    kind = ""
    serves = ""

    def __init__(self, precision: str | None = None, device: str | torch.device | None = None):
        super().__init__()
        self._precision = config.precision if precision is None else check_precision(precision)
        self._device = config.device if device is None else check_device(device)

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return dtypes(self._precision)[0]

    @property
    def cdtype(self) -> torch.dtype:
        return dtypes(self._precision)[1]

    def cast(self, x):
        """A tensor input on the block's device, complex ones in ``cdtype``; non-tensors as given."""
        if not torch.is_tensor(x):
            return x
        if x.is_complex():
            return x.to(device=self._device, dtype=self.cdtype)
        return x.to(self._device)
