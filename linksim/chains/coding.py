r"""The coded uplink's frame layout and code: Sionna's 5G LDPC, QAM mapper and demapper.

Used by :class:`~linksim.chains.coded.CodedChain`; the frame is the detection chain's
(``F`` subcarriers x ``T`` slots per drop), the code and pilots come from ``[coded]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LinksimError

#: floor of the pilot-estimated post-detection noise variance (keeps LLRs of hard-output detectors finite)
NOISE_VAR_FLOOR = 1e-3


@dataclass(frozen=True)
class FrameLayout:
    r"""Where a drop's pilots and codeword symbols sit, per user.

    .. math::
        C = \left\lfloor \frac{F\,(T-P)}{n / m} \right\rfloor

    codewords per user and drop, with :math:`F` subcarriers, :math:`T` slots, :math:`P` pilot
    slots, :math:`m` bits per symbol and :math:`n` code bits per codeword. The data elements are
    ordered frequency-first (element :math:`r = (t-P)F + f`); the first :math:`Cn/m` carry the
    codewords one after the other, the rest (``data_res - used_res``) random filler symbols.
    Refuses (``LinksimError``, naming the scenario key) layouts without room for one codeword.

    :param num_subcarriers: :math:`F` (``channel.num_subcarriers``)
    :param num_slots: :math:`T` (``detection.symbols_per_sample``)
    :param pilot_slots: :math:`P` (``coded.pilot_slots``), the leading slots of every subcarrier
    :param bits_per_symbol: :math:`m` (``detection.bits_per_symbol``)
    :param n: code bits per codeword (``coded.coded_block_bits``), a multiple of :math:`m`
    :param k: info bits per codeword

    .. rubric:: Examples

    .. code-block:: python

        from linksim.chains.coding import FrameLayout
        lay = FrameLayout(48, 6, 1, 4, 480, 240)
        lay.codewords, lay.data_res, lay.used_res       # 2, 240, 240
    """

    num_subcarriers: int
    num_slots: int
    pilot_slots: int
    bits_per_symbol: int
    n: int
    k: int

    def __post_init__(self):
        if self.pilot_slots >= self.num_slots:
            raise LinksimError(f"coded.pilot_slots = {self.pilot_slots} leaves no data slot of the "
                               f"detection.symbols_per_sample = {self.num_slots}")
        if self.n % self.bits_per_symbol:
            raise LinksimError(f"coded.coded_block_bits = {self.n} is not a multiple of "
                               f"detection.bits_per_symbol = {self.bits_per_symbol}")
        if self.codewords < 1:
            raise LinksimError(f"coded.coded_block_bits = {self.n} does not fit in the "
                               f"{self.data_res * self.bits_per_symbol} data bits per user of a drop "
                               f"({self.num_subcarriers} subcarriers x {self.num_slots - self.pilot_slots} "
                               f"data slots x {self.bits_per_symbol} bits)")

    @property
    def symbols_per_codeword(self) -> int:
        return self.n // self.bits_per_symbol

    @property
    def data_res(self) -> int:
        """Data resource elements per user and drop, :math:`F(T-P)`."""
        return self.num_subcarriers * (self.num_slots - self.pilot_slots)

    @property
    def codewords(self) -> int:
        """Codewords per user and drop, :math:`C`."""
        return self.data_res // self.symbols_per_codeword

    @property
    def used_res(self) -> int:
        """Data elements carrying codeword symbols, :math:`Cn/m`."""
        return self.codewords * self.symbols_per_codeword


def frame_layout(scenario) -> FrameLayout:
    """The :class:`FrameLayout` of a scenario (``[channel]``, ``[detection]``, ``[coded]``);
    ``k = round(coded.code_rate * coded.coded_block_bits)``. Bad keys: ``LinksimError`` naming
    the file and the key."""
    c, d = scenario.coded, scenario.detection
    try:
        return FrameLayout(scenario.channel.num_subcarriers, d.symbols_per_sample, c.pilot_slots,
                           d.bits_per_symbol, c.coded_block_bits, round(c.code_rate * c.coded_block_bits))
    except LinksimError as e:
        raise LinksimError(f"{scenario.path}: {e}") from None


class LinkCode:
    r"""Sionna's 5G LDPC code and QAM (de)mapper for one :class:`FrameLayout`.

    .. math::
        \mathbf{s} = \mathrm{Map}\big(\mathrm{LDPC5G}(\mathbf{u})\big), \qquad
        \ell_i = \ln\frac{\sum_{c:\,b_i(c)=1} e^{-|\hat{x}-c|^2/\hat{\sigma}^2}}
                        {\sum_{c:\,b_i(c)=0} e^{-|\hat{x}-c|^2/\hat{\sigma}^2}}, \qquad
        \hat{\mathbf{u}} = \mathrm{BP}(\boldsymbol{\ell})

    (``maxlog``: max instead of sum). ``LDPC5GEncoder(k, n, num_bits_per_symbol=m)`` does the
    rate matching and the 5G bit interleaver; ``LDPC5GDecoder`` undoes both and runs
    ``bp_iterations`` flooding iterations (boxplus-phi check nodes, messages clipped at 20, no
    early stop) and returns hard info bits.

    :param layout: the :class:`FrameLayout` (``n``, ``k``, ``bits_per_symbol``)
    :param bp_iterations: BP iterations of the decoder
    :param demapping: ``"app"`` or ``"maxlog"`` (Sionna ``Demapper``)
    :param precision: ``"single"`` | ``"double"``
    :param device: where the code's tensors live

    :input bits: [..., k], real 0/1 (``encode``). Info bits.
    :input x_hat: [..., n/m], complex, and ``noise_var`` broadcastable to it (``llr``).
    :input llr: [..., n], real (``decode``). Logits :math:`\ln\frac{P(c=1)}{P(c=0)}`.

    :output symbols: [..., n/m], complex (``encode``).
    :output llr: [..., n], real (``llr``).
    :output bits_hat: [..., k], real 0/1 (``decode``).

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.chains.coding import FrameLayout, LinkCode
        code = LinkCode(FrameLayout(48, 6, 1, 4, 480, 240))
        u = torch.randint(0, 2, (3, 240)).float()
        s = code.encode(u)                                   # [3, 120] complex64
        u_hat = code.decode(code.llr(s, torch.tensor(1e-3)))
        assert torch.equal(u_hat, u)
    """

    def __init__(self, layout: FrameLayout, bp_iterations: int = 20, demapping: str = "app",
                 precision: str = "single", device: str = "cpu"):
        from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
        from sionna.phy.mapping import Demapper, Mapper

        if demapping not in ("app", "maxlog"):
            raise LinksimError(f"coded.demapping: expected 'app' or 'maxlog', got {demapping!r}")
        if int(bp_iterations) < 1:
            raise LinksimError(f"coded.bp_iterations = {bp_iterations!r} must be > 0")
        self.layout = layout
        m = layout.bits_per_symbol
        try:
            self.encoder = LDPC5GEncoder(layout.k, layout.n, num_bits_per_symbol=m,
                                         precision=precision, device=device)
        except (ValueError, AssertionError, TypeError) as e:
            raise LinksimError(f"coded.code_rate / coded.coded_block_bits: k = {layout.k}, "
                               f"n = {layout.n} is not a 5G LDPC code Sionna supports ({e})") from None
        self.decoder = LDPC5GDecoder(self.encoder, num_iter=int(bp_iterations), hard_out=True,
                                     return_infobits=True, precision=precision, device=device)
        self.mapper = Mapper("qam", m, precision=precision, device=device)
        self.demapper = Demapper(demapping, "qam", m, precision=precision, device=device)
        self.cdtype = torch.complex128 if precision == "double" else torch.complex64

    def encode(self, bits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.mapper(self.encoder(bits))

    def llr(self, x_hat: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.demapper(x_hat.to(self.cdtype), noise_var.to(self.cdtype.to_real()))

    def decode(self, llr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.decoder(llr)


__all__ = ["NOISE_VAR_FLOOR", "FrameLayout", "LinkCode", "frame_layout"]
