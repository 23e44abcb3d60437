r"""Coded uplink chain (task ``coded``): 5G LDPC codewords over the detection link, BLER and BER.

The physical link is the one of :class:`~linksim.chains.detection.DetectionChain` (its users,
QAM order, slots per subcarrier, SNR and drops, from the scenario's ``[detection]`` table); the
code, the pilots and the stopping rule come from ``[coded]``. The frame layout and the Sionna
code pieces live in :mod:`linksim.chains.coding`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks.qam import random_symbols
from ..errors import LinksimError
from ..metrics import ErrorRate
from ..registry import register_task
from ..scenario import register_section, setting
from .base import Chain, Point, complex_noise, finite
from .coding import NOISE_VAR_FLOOR, FrameLayout, LinkCode, frame_layout
from .detection import uplink


def _pos(v):
    return v > 0


@register_section("coded")
@dataclass
class Coded:
    """``[coded]``: 5G LDPC codewords over the ``[detection]`` link (its users, QAM order, slots
    and SNR), LLRs from pilot-estimated noise; stops as ``[detection]`` does, in block errors.
    See :class:`CodedChain`."""

    code_rate: float = setting(0.5, lambda v: 0 < v < 1, "must be in (0, 1)")
    coded_block_bits: int = setting(480, _pos, "must be > 0")       # n (k = round(code_rate * n))
    bp_iterations: int = setting(20, _pos, "must be > 0")
    demapping: str = setting("app", choices=("app", "maxlog"))
    pilot_slots: int = setting(1, _pos, "must be > 0")              # leading slots of each subcarrier
    target_block_errors: int = setting(100, _pos, "must be > 0")
    min_samples: int = setting(32, _pos, "must be > 0")
    max_samples: int = setting(256, _pos, "must be > 0")

    def validate(self, path, scenario):
        if self.min_samples > self.max_samples:
            raise LinksimError(f"{path}: coded.min_samples ({self.min_samples}) > max_samples "
                               f"({self.max_samples})")


def coded_batch(h: torch.Tensor, noise_var: float, layout: FrameLayout, code: LinkCode,
                gen: torch.Generator) -> dict:
    r"""One batch of the coded uplink: info bits, codewords, a pilot + data frame, :math:`y = Hx + n`.

    .. math::
        \mathbf{y}_{f,t} = \mathbf{H}_f\,\mathbf{x}_{f,t} + \mathbf{n}_{f,t}, \qquad
        \mathbf{n}_{f,t}\sim\mathcal{CN}(\mathbf{0}, \sigma^2\mathbf{I}_M)

    for subcarrier :math:`f` and slot :math:`t`; slots :math:`t < P` carry known pilot symbols,
    the others the codeword symbols (frequency-first, see :func:`~linksim.chains.coding.frame_layout`).
    The generator draws, in this order, the info bits, the pilots, the filler symbols, the noise.

    :param h: [b*F, M, K], complex. Uplink matrices, drop-major (as :func:`~linksim.chains.detection.uplink`).
    :param noise_var: float. Noise variance :math:`\sigma^2` per receive antenna.
    :param layout: the :class:`~linksim.chains.coding.FrameLayout` (F must match ``h``)
    :param code: the :class:`~linksim.chains.coding.LinkCode`
    :param gen: generator on ``h``'s device

    :output batch: dict with ``y [b*F, M, T]``, ``h``, ``noise_var``, ``x [b, F, K, T]`` (pilots
        and data), ``bits [b, K, C, k]`` (info bits, real 0/1), ``layout``, ``code``, ``drops`` = b.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.chains.coding import FrameLayout, LinkCode
        from linksim.chains.coded import coded_batch
        lay = FrameLayout(num_subcarriers=12, num_slots=6, pilot_slots=1, bits_per_symbol=4,
                          n=120, k=60)
        code = LinkCode(lay)
        h = torch.randn(2 * 12, 8, 2, dtype=torch.complex64)       # 2 drops, M=8, K=2
        batch = coded_batch(h, 0.1, lay, code, torch.Generator().manual_seed(0))
        batch["y"].shape, batch["bits"].shape                       # [24, 8, 6], [2, 2, 2, 60]
    """
    bf, m, num_users = h.shape
    f, t, p = layout.num_subcarriers, layout.num_slots, layout.pilot_slots
    b = bf // f
    dev, cdtype = h.device, h.dtype
    real = torch.float64 if cdtype == torch.complex128 else torch.float32
    c = layout.codewords
    bits = torch.randint(0, 2, (b, num_users, c, layout.k), generator=gen, device=dev).to(real)
    coded = code.encode(bits).to(cdtype).reshape(b, num_users, layout.used_res)
    _, pilots = random_symbols((b, f, num_users, p), layout.bits_per_symbol, gen, dtype=cdtype)
    _, filler = random_symbols((b, num_users, layout.data_res - layout.used_res),
                               layout.bits_per_symbol, gen, dtype=cdtype)
    data = torch.cat([coded, filler], -1).reshape(b, num_users, t - p, f).permute(0, 3, 1, 2)
    x = torch.cat([pilots, data], -1)                                     # [b, F, K, T]
    y = h @ x.reshape(bf, num_users, t) + complex_noise((bf, m, t), noise_var, gen, cdtype)
    return {"y": y, "h": h, "noise_var": noise_var, "x": x, "bits": bits, "layout": layout,
            "code": code, "drops": b}


def receive(block, batch: dict) -> dict:
    r"""Detect, estimate each user's post-detection noise from the pilots, demap and decode.

    .. math::
        \hat{\sigma}_k^2 = \max\Big(\frac{1}{FP}\sum_{f}\sum_{t<P}
            \big|\hat{x}_{k,f,t} - x_{k,f,t}\big|^2,\ \sigma^2_{\min}\Big)

    per drop and user (:math:`\sigma^2_{\min}` = ``NOISE_VAR_FLOOR``); the data estimates are
    demapped as :math:`\hat{x} = x + e`, :math:`e \sim \mathcal{CN}(0, \hat{\sigma}_k^2)`.

    :input block: a detector ``(y [n,M,T], h [n,M,K], noise_var) -> x_hat [n,K,T]``
    :input batch: dict. A :func:`coded_batch`.

    :output out: dict with ``x_hat [b, F, K, T]``, ``noise_var [b, K]`` (:math:`\hat{\sigma}_k^2`),
        ``llr [b, K, C, n]`` (logits, :math:`\ln\frac{P(c=1)}{P(c=0)}`), ``bits_hat [b, K, C, k]``.

    .. rubric:: Examples

    .. code-block:: python

        import torch, linksim
        from linksim.chains.coding import FrameLayout, LinkCode
        from linksim.chains.coded import coded_batch, receive
        lay = FrameLayout(12, 6, 1, 4, 120, 60)
        h = torch.randn(2 * 12, 8, 2, dtype=torch.complex64)
        batch = coded_batch(h, 0.01, lay, LinkCode(lay), torch.Generator().manual_seed(0))
        out = receive(linksim.blocks.get("lmmse", "detector"), batch)
        out["noise_var"].shape, out["bits_hat"].shape               # [2, 2], [2, 2, 2, 60]
    """
    lay, code, x = batch["layout"], batch["code"], batch["x"]
    b, f, num_users, t = x.shape
    p = lay.pilot_slots
    with torch.no_grad():
        x_hat = finite(block(batch["y"], batch["h"], batch["noise_var"])).reshape(b, f, num_users, t)
        err = (x_hat[..., :p] - x[..., :p]).abs().square()
        nv = err.mean(dim=(1, 3)).clamp_min(NOISE_VAR_FLOOR)              # [b, K]
        data = x_hat[..., p:].permute(0, 2, 3, 1).reshape(b, num_users, lay.data_res)
        data = data[..., :lay.used_res].reshape(b, num_users, lay.codewords, lay.symbols_per_codeword)
        llr = code.llr(data, nv[:, :, None, None])
        bits_hat = code.decode(llr)
    return {"x_hat": x_hat, "noise_var": nv, "llr": llr, "bits_hat": bits_hat}


@register_task("coded", "detector", trainable=False)
class CodedChain(Chain):
    r"""Coded uplink: BLER and coded BER over SNR, for any detector block.

    Per drop and user: :math:`C` blocks of :math:`k` info bits, each 5G-LDPC encoded (Sionna
    ``LDPC5GEncoder``, rate matching and the 5G bit interleaver for the QAM order) into :math:`n`
    bits, Gray-mapped (Sionna ``Mapper``) to :math:`n/\log_2|\mathcal{C}|` QAM symbols. On every
    subcarrier :math:`f` of the drop (the uplink of :class:`~linksim.chains.detection.DetectionChain`)

    .. math::
        \mathbf{y}_{f,t} = \mathbf{H}_f\,\mathbf{x}_{f,t} + \mathbf{n}_{f,t}, \qquad t = 0, \dots, T-1

    where slots :math:`t < P` carry pilots (known uniform QAM symbols of every user) and the other
    :math:`F(T-P)` resource elements carry the codeword symbols, frequency-first (element
    :math:`r = (t-P)F + f`), codeword after codeword; the :math:`F(T-P) - Cn/\log_2|\mathcal{C}|`
    left over carry random filler symbols, detected but not scored. Pilot and filler elements
    carry no information: the info rate is :math:`KCk/(FT)` bit per resource element (quick
    scenario: :math:`4\cdot 2\cdot 240/288 = 6.67`, against 8 for rate-1/2 16-QAM on every element).

    The detector block gets the whole frame, :math:`\hat{\mathbf{x}} = D(\mathbf{y}, \mathbf{H}, \sigma^2)`.
    The **post-detection noise variance** of user :math:`k` in a drop is estimated from its
    :math:`FP` pilots by the receiver (no genie, no detector-specific formula: one mechanism for
    linear, tree-search and learned detectors alike)

    .. math::
        \hat{\sigma}_k^2 = \max\Big(\frac{1}{FP}\sum_{f}\sum_{t<P}\big|\hat{x}_{k,f,t} - x_{k,f,t}\big|^2,\ 10^{-3}\Big)

    For unbiased linear detectors this estimates :math:`\mathbb{E}|\hat{x}_k - x_k|^2` averaged over
    the drop's subcarriers (for ``lmmse`` :math:`[\mathbf{E}]_{kk}/(1-[\mathbf{E}]_{kk})`,
    :math:`\mathbf{E} = (\mathbf{I} + \mathbf{H}^{\mathsf{H}}\mathbf{H}/\sigma^2)^{-1}`); it ignores
    the per-subcarrier variation a linear detector's closed form would give. Hard-output detectors
    (``kbest``, ``ml``) often hit every pilot exactly; the floor :math:`10^{-3}` keeps the LLRs
    finite (their magnitude is then large: those LLRs are over-confident by construction).
    The LLRs of the data symbols follow Sionna's ``Demapper`` (``coded.demapping``: ``app`` or
    ``maxlog``) with :math:`\hat{x} = x + e`, :math:`e\sim\mathcal{CN}(0, \hat{\sigma}_k^2)`;
    Sionna's ``LDPC5GDecoder`` runs ``coded.bp_iterations`` flooding BP iterations (boxplus-phi,
    messages clipped at 20) and returns hard info bits. A block is in error if any info bit is.

    Metrics: ``bler`` (errors over :math:`bKC` blocks) and ``ber`` (over the info bits), each with
    a Clopper-Pearson interval. As in detection, each block stops at a point once it has
    ``coded.target_block_errors`` block errors and ``coded.min_samples`` drops have run, or at
    ``coded.max_samples`` drops; all blocks see the same drops, bits, pilots and noise.

    Defaults (``[coded]``): :math:`n = 480`, rate 1/2 (:math:`k = 240`), 20 BP iterations, ``app``,
    :math:`P = 1`; with 48 subcarriers x 6 slots and 16-QAM that is :math:`C = 2` codewords per user
    and drop with no filler. Stopping: 100 block errors, 32 to 256 drops.

    :param scenario: the :class:`~linksim.Scenario` (``[detection]``: link; ``[coded]``: code)
    :param cache: a :class:`~linksim.chains.base.ChannelCache` to share drops (default: a new one)

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        from linksim.chains.coded import CodedChain
        sc = linksim.load_scenario("scenarios/quick.toml").replace(coded={"max_samples": 32})
        chain = CodedChain(sc)
        det = linksim.blocks.get("lmmse", "detector", sc)
        acc = chain.run_point({"lmmse": det}, chain.point("snr_db", 6.0))
        acc["lmmse"]["bler"].result()          # (value, ci_low, ci_high, blocks)
    """

    section = "detection"
    x_names = ("snr_db", "num_users", "speed_kmh")
    default_x = "snr_db"

    def __init__(self, scenario, cache=None):
        super().__init__(scenario, cache)
        self.layout = frame_layout(scenario)
        self.code = LinkCode(self.layout, scenario.coded.bp_iterations, scenario.coded.demapping,
                             scenario.run.precision, str(self.device))

    def budget(self, point):
        return point.scenario.coded.max_samples

    def batches(self, point: Point):
        det, cfg = point.scenario.detection, point.scenario.coded
        noise_var = 10 ** (-det.snr_db / 10)
        drops, i = 0, 0
        while drops < cfg.max_samples:
            b = min(point.scenario.run.batch_size, cfg.max_samples - drops)
            h = uplink(self.channels(point, i, b, det.num_users, 1)).to(self.cdtype)   # [bF, M, K]
            yield coded_batch(h, noise_var, self.layout, self.code, self.noise_generator(point, i))
            drops += b
            i += 1

    @staticmethod
    def new_metrics(block=None):
        return {"bler": ErrorRate(), "ber": ErrorRate()}

    @staticmethod
    def measure(block, batch, acc):
        wrong = receive(block, batch)["bits_hat"] != batch["bits"]         # [b, K, C, k]
        acc["bler"].update(wrong.any(-1).sum(), wrong[..., 0].numel())
        acc["ber"].update(wrong.sum(), wrong.numel())

    def done(self, acc, drops):
        cfg = self.scenario.coded
        return drops >= cfg.min_samples and acc["bler"].errors >= cfg.target_block_errors


__all__ = ["CodedChain", "coded_batch", "receive"]
