"""What every block shares: precision and device, taken once at construction, inputs cast once.

As Sionna's ``Block``: a block takes ``precision`` (``"single"`` | ``"double"``) and ``device``;
``None`` means the value of :data:`linksim.config`. ``dtype``/``cdtype`` are the real/complex
dtypes of its outputs, and :meth:`Block.cast` moves tensor inputs to the block's device and
complex ones to ``cdtype`` on entry (a Python float stays a float: blocks turn it into a tensor
on their device themselves, so ``p_tx = 0.1`` is not rounded to float32 on the way in).

``kind`` and ``serves`` are set by :func:`linksim.registry.register_block`.

A block whose one call may run for minutes (``ml``) says how far it is with
:func:`report_progress`; whoever runs it (a sweep's progress bar) listens with
:func:`progress_within`.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager

import torch

from ..config import check_device, check_precision, config, dtypes
from ..errors import LinksimError


class Block(torch.nn.Module):
    """Base of linksim's classical blocks.

    :param precision: ``"single"`` (complex64 outputs) or ``"double"`` (complex128); ``None``:
        ``linksim.config.precision``
    :param device: where inputs are moved and outputs live; ``None``: ``linksim.config.device``
    """

    kind = ""
    serves = ""
    #: whether the block is defined for more users than BS antennas (K > M); a sweep refuses a
    #: point with K > M for a block that is not (``zf``, ``zf_det``, ``kbest``) before any compute
    serves_overloaded = True
    #: why a block that does not serve K > M cannot, and what to use instead (the refusal says it)
    overloaded_why = ""

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


def per_sample(x, b: int, device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""A per-sample real value (``p_tx``, ``noise_var``, ...) as a ``[b]`` tensor on ``device``.

    :input x: float, 0-d tensor, ``[b]`` or ``[b, 1, ...]`` tensor. One value for the batch or
        one per sample; complex values give their real part.
    :input b: int. Batch size.
    :input device: torch.device. Where the result lives.
    :input dtype: torch.dtype (default ``torch.float64``). A Python number goes straight to it
        (no float32 rounding on the way).

    :output x: [b], ``dtype``. ``x`` broadcast (a single value) or flattened (``b`` values);
        a one-line ``LinksimError`` (a ``ValueError``) for any other number of values.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.base import per_sample
        per_sample(0.1, 4, "cpu")                  # tensor([0.1, 0.1, 0.1, 0.1], float64)
        per_sample(torch.rand(4, 1), 4, "cpu")     # [4], float64
    """
    if isinstance(x, (int, float)):
        t = torch.as_tensor(float(x), dtype=torch.float64, device=device)
    else:
        t = torch.as_tensor(x, device=device)
    t = (t.real if t.is_complex() else t).to(dtype)
    if t.numel() == 1:
        return t.reshape(()).expand(b)
    t = t.reshape(-1)
    if t.numel() != b:
        raise LinksimError(f"expected a scalar or {b} values per batch, got shape {tuple(t.shape)}")
    return t



def positive(x: torch.Tensor, what: str) -> torch.Tensor:
    r"""``x`` unchanged when every entry is finite and positive, else a one-line ``LinksimError``.

    .. math::
        0 < x_i < \infty, \quad i = 1, \dots, b

    Blocks whose algebra divides by a power or a noise variance (WMMSE's MMSE receivers, the
    DPC bound's :math:`G/\sigma^2`, RZF's :math:`K\sigma^2/P`) check them with it, so that a zero
    or negative value names itself instead of surfacing as a singular-matrix traceback.

    :input x: [b] real tensor. Per-sample values (from :func:`per_sample`).
    :input what: str. The culprit as the message names it, e.g. ``"wmmse: noise_var"``.

    :output x: [b]. ``x`` itself.

    .. rubric:: Examples

    .. code-block:: python

        from linksim.blocks.base import per_sample, positive
        s2 = positive(per_sample(0.1, 4, "cpu"), "wmmse: noise_var")   # [4] float64
    """
    bad = ~(torch.isfinite(x) & (x > 0))
    if bool(bad.any()):
        raise LinksimError(f"{what} must be finite and > 0, got {x[bad][0].item():g}")
    return x


_PROGRESS = contextvars.ContextVar("linksim_progress_within", default=None)


@contextmanager
def progress_within(callback):
    r"""Listen, inside the ``with`` body, to how far the running block call is.

    A block that loops over chunks of one call (``ml``: :math:`|\mathcal{C}|^K` hypotheses for
    every symbol vector) calls :func:`report_progress` after each chunk; ``callback`` then gets
    the fraction of that call done. Nothing changes in what the block computes.

    :param callback: ``callback(fraction)``, fraction in (0, 1]; ``None``: nobody listens

    .. rubric:: Examples

    .. code-block:: python

        from linksim.blocks.base import progress_within
        with progress_within(lambda f: print(f"{f:.0%}")):
            x_hat = ml(y, h, 0.01)           # 6%, 12%, ..., 100% for a call of 16 chunks
    """
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def report_progress(fraction: float) -> None:
    """Tell the listener of :func:`progress_within` (if any) that ``fraction`` of the running
    block call is done.

    :param fraction: float in (0, 1]

    .. rubric:: Examples

    .. code-block:: python

        from linksim.blocks.base import report_progress
        for i, chunk in enumerate(chunks):
            ...                                       # one slow piece of the call
            report_progress((i + 1) / len(chunks))
    """
    callback = _PROGRESS.get()
    if callback is not None:
        callback(fraction)
