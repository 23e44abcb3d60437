"""In-the-loop chain: noisy history -> predictor -> precoder on predicted CSI -> sum-rate and uncoded
QAM bit errors on the true future channel. A block is ``PREDICTOR+PRECODER`` (e.g. ``ar+wmmse``;
``genie+wmmse`` is the perfect-CSI upper reference)."""
from __future__ import annotations

import math

import torch

from ..blocks.precoders import sum_rate
from ..blocks.qam import constellation_points, hard_decision, random_symbols, symbols_to_bits
from ..metrics import NMSE, ErrorRate, Mean
from ..errors import LinksimError
from ..registry import REFERENCE, register_kind, register_task
from .base import Chain, NonFiniteOutput, Point, complex_noise, finite
from .precoding import downlink
from .prediction import predict, prediction_batch, update_nmse


def downlink_bit_errors(h: torch.Tensor, w: torch.Tensor, idx: torch.Tensor, noise: torch.Tensor,
                        num_bits_per_symbol: int) -> torch.Tensor:
    r"""Bit errors of uncoded QAM sent with precoder ``w`` over the downlink ``h``, one-tap
    equaliser at each user.

    User :math:`k` receives, in each of the S symbol slots,

    .. math::
        y_k = h_k w_k s_k + \sum_{j \ne k} h_k w_j s_j + n_k, \qquad
        \hat{s}_k = \mathop{\mathrm{argmin}}_{c \in \mathcal{C}} \Big|\frac{y_k}{g_k} - c\Big|,
        \qquad g_k = h_k w_k

    where :math:`h_k` (``1 x M``) is user k's true channel, :math:`w_j` column j of ``w``,
    :math:`s_j = c_{i_j}` unit-energy QAM symbols (Sionna's Gray-labelled constellation
    :math:`\mathcal{C}`) and :math:`n_k` the noise. The user is assumed to know its effective gain
    :math:`g_k` exactly (a precoded downlink DMRS) and nothing else: the interference is left in
    :math:`y_k`. A user the precoder gives no gain (:math:`g_k = 0`) decides on 0, i.e. guesses.
    Computed in complex128 (the points are Sionna's, built in double precision).

    :input h: [n, K, M], complex. True downlink channels (row k = user k).
    :input w: [n, M, K], complex. Precoders (column k = user k's beam).
    :input idx: [n, K, S], int. Indices of the sent symbols.
    :input noise: [n, K, S], complex. Receiver noise :math:`n_k`.
    :input num_bits_per_symbol: int. Bits per QAM symbol (4: 16-QAM).

    :output errors: [], torch.int64. Number of bit errors over all n x K x S symbols.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import ZF
        from linksim.blocks.qam import random_symbols
        from linksim.chains.loop import downlink_bit_errors
        g = torch.Generator().manual_seed(0)
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        idx, _ = random_symbols((8, 4, 6), 4, g)
        noise = 0.01 * torch.randn(8, 4, 6, dtype=torch.complex64)
        e = downlink_bit_errors(h, ZF()(h, 100.0), idx, noise, 4)     # tensor(0)
    """
    c128 = torch.complex128
    e = h.to(c128) @ w.to(c128)                                   # e[:, k, j] = h_k w_j
    x = constellation_points(num_bits_per_symbol, idx.device, c128)[idx]
    y = e @ x + noise.to(c128)
    g = torch.diagonal(e, dim1=-2, dim2=-1)[..., None]           # [n, K, 1]
    x_hat = torch.where(g != 0, y / torch.where(g != 0, g, torch.ones_like(g)), torch.zeros_like(y))
    idx_hat, _ = hard_decision(x_hat, num_bits_per_symbol)
    return (symbols_to_bits(idx_hat, num_bits_per_symbol) != symbols_to_bits(idx, num_bits_per_symbol)).sum()


register_kind("loop", "PREDICTOR+PRECODER: a predictor's CSI feeds a precoder (--task loop)")


class LoopBlock(torch.nn.Module):
    """A predictor and a precoder used together (block kind ``loop``). Pairs with the same
    ``predictor_name`` (``ar+wmmse``, ``ar+zf``) share one prediction per batch."""

    kind = "loop"

    def __init__(self, predictor, precoder, predictor_name: str = ""):
        super().__init__()
        self.predictor = predictor
        self.precoder = precoder
        self.predictor_name = predictor_name

    @property
    def share_key(self):
        """Pairs with equal keys share a prediction: the predictor's name, else this pair alone."""
        return self.predictor_name or id(self)


@register_task("loop", "loop", trainable=False)
class LoopChain(Chain):
    """The predictor's CSI feeds the precoder; rate and bit errors are measured on the true future.

    Metrics per point:

    - ``sum_rate``: sum-rate on the true channel at each of the P future steps (mean over steps
      and the chain's subcarriers per drop; :func:`~linksim.blocks.precoders.sum_rate`);
    - ``ber``: uncoded bit error rate at the users (:func:`downlink_bit_errors`): at each future
      step and subcarrier, the precoder designed on the predicted CSI sends
      ``[detection].symbols_per_sample`` independent QAM symbols (``[detection].bits_per_symbol``,
      unit energy) to each user over the true channel, with noise variance
      ``[precoding].noise_power_dbw``; each user equalises with its exact effective gain
      :math:`g_k = h_k w_k` (a precoded downlink DMRS) and decides hard. Every user counts, with
      the same QAM order (no link adaptation): a user that a sum-rate maximiser (``wmmse``,
      ``wmmse_best``) leaves almost without power has a BER near 1/2, so BER and sum-rate may
      rank precoders differently. A reference precoder (``dpc_bound``) returns a rate, not
      beams, so it has no ``ber`` row;
    - ``nmse_db``: the predictor's NMSE over the P steps.

    Users, power and subcarriers: ``[precoding]``; history, horizon, history SNR and drops:
    ``[prediction]``. The history noise, then the symbols, then the users' noise of a batch come
    from the chain's seeded generator (:meth:`Chain.noise_generator`), so every block at a point
    sees the same ones.
    """

    section = "prediction"
    x_names = ("speed_kmh", "snr_db", "tx_power_dbw", "num_users")
    default_x = "speed_kmh"

    @classmethod
    def num_users(cls, sc):
        return sc.precoding.num_users

    @classmethod
    def num_time(cls, sc):
        return sc.prediction.history + sc.prediction.horizon

    @classmethod
    def make_block(cls, name, scenario):
        """``PREDICTOR+PRECODER`` -> a :class:`LoopBlock`."""
        from ..blocks import get
        parts = name.split("+")
        if len(parts) != 2:
            raise LinksimError(f"block {name!r}: --task loop takes PREDICTOR+PRECODER (e.g. ar+wmmse)")
        return LoopBlock(get(parts[0], "predictor", scenario), get(parts[1], "precoder", scenario), parts[0])

    @staticmethod
    def parts(block):
        return (block.predictor, block.precoder)

    def current(self, x_name):
        if x_name in ("tx_power_dbw", "num_users"):
            return getattr(self.scenario.precoding, x_name)
        return super().current(x_name)

    def apply(self, x_name, x):
        if x_name in ("tx_power_dbw", "num_users"):
            value = int(x) if x_name == "num_users" else float(x)
            return self.scenario.replace(precoding={x_name: value})
        return super().apply(x_name, x)

    def batches(self, point: Point):
        sc = point.scenario
        cp, pre, det = sc.prediction, sc.precoding, sc.detection
        batch = sc.run.batch_size
        p_tx, noise_var = 10 ** (pre.tx_power_dbw / 10), 10 ** (pre.noise_power_dbw / 10)
        for i in range(math.ceil(cp.num_samples / batch)):
            b = min(batch, cp.num_samples - i * batch)
            h = self.channels(point, i, b, pre.num_users, cp.history + cp.horizon)
            gen = self.noise_generator(point, i)
            out = prediction_batch(h, cp.history, 10 ** (-cp.snr_db / 10), gen)
            # one row per (drop, subcarrier), in the order of downlink(): [P, b*F', K, S]
            rows = b * (1 if pre.subcarriers == "centre" else h.shape[-1])
            shape = (cp.horizon, rows, pre.num_users, det.symbols_per_sample)
            idx, _ = random_symbols(shape, det.bits_per_symbol, gen)
            noise = complex_noise(shape, noise_var, gen, h.dtype)
            yield out | {"p_tx": p_tx, "noise_var": noise_var, "subcarriers": pre.subcarriers,
                         "qam_idx": idx, "qam_noise": noise, "bits_per_symbol": det.bits_per_symbol}

    @staticmethod
    def new_metrics(block=None):
        """``sum_rate``, ``nmse_db``, and ``ber`` unless the precoder is a reference (a rate limit
        sends no symbols)."""
        out = {"sum_rate": Mean(), "ber": ErrorRate(), "nmse_db": NMSE()}
        if block is not None and block.precoder.kind == REFERENCE:
            del out["ber"]
        return out

    def prepare(self, batch, blocks):
        """Each predictor's prediction once per batch (``ar+wmmse`` and ``ar+zf`` share it):
        ``batch["predicted"][predictor_name]``."""
        predicted = {}
        for label, blk in blocks.items():
            if blk.share_key not in predicted:
                try:
                    predicted[blk.share_key] = predict(blk.predictor, batch["hist"], batch["future"])
                except NonFiniteOutput as e:
                    e.label = label
                    raise
        return batch | {"predicted": predicted}

    @staticmethod
    def measure(blk, batch, acc):
        hist, fut, b = batch["hist"], batch["future"], batch["drops"]
        h_hat = batch["predicted"][blk.share_key] if "predicted" in batch else predict(blk.predictor, hist, fut)
        update_nmse(acc["nmse_db"], h_hat, fut)
        sub, p_tx, nv, nb = batch["subcarriers"], batch["p_tx"], batch["noise_var"], batch["bits_per_symbol"]
        reference = blk.precoder.kind == REFERENCE
        rates, errors = [], 0
        for t in range(fut.shape[1]):
            h_true = downlink(fut, t, sub)
            if reference:    # a limit curve (dpc_bound): handed the truth, returns the rate itself
                rates.append(finite(blk.precoder(h_true, p_tx, nv)))
                continue
            w = finite(blk.precoder(downlink(h_hat, t, sub), p_tx, nv))
            rates.append(sum_rate(h_true, w, nv))
            errors += int(downlink_bit_errors(h_true, w, batch["qam_idx"][t], batch["qam_noise"][t], nb))
        acc["sum_rate"].update(torch.stack([r.reshape(b, -1).mean(1) for r in rates]).mean(0))
        if not reference:
            acc["ber"].update(errors, batch["qam_idx"].numel() * nb)
