"""WMMSE from several starting points, best per sample (registered as ``wmmse_best``).

WMMSE converges to a stationary point of the (non-convex) sum-rate, which depends on where it
starts. Running it from many starting points and keeping the best is the usual way to approach
the best *linear* precoder. The restarts are stacked into the batch dimension and share
:class:`~linksim.blocks.precoders.WMMSE`'s vectorised iteration.
"""
from __future__ import annotations

import torch

from ...config import config, derive_seed, generator
from ...errors import LinksimError
from ...registry import register_block
from ..base import positive
from .rates import _c128, _gram, _power_k, per_sample
from .wmmse import WMMSE

__all__ = ["WMMSEBest"]

#: default number of starting points (1 deterministic + 9 random); see the class docstring
DEFAULT_RESTARTS = 10


@register_block("wmmse_best", "precoder")
class WMMSEBest(WMMSE):
    r"""WMMSE from several starting points, keeping per sample the beams of highest sum-rate.

    For each sample, WMMSE (:class:`~linksim.blocks.precoders.WMMSE`, Shi et al. 2011) is run
    from :math:`N` = ``restarts`` starting points :math:`W^{(0)}, \dots, W^{(N-1)}` to the
    stationary points :math:`W^{(r)}_\star`, and the block returns

    .. math::
        W = W^{(r^\star)}_\star,\qquad r^\star = \mathop{\mathrm{argmax}}_{r}\;
        \sum_{k=1}^{K} \log_2\!\Big(1 + \frac{|h_k w^{(r)}_{\star,k}|^2}
        {\sum_{j\ne k} |h_k w^{(r)}_{\star,j}|^2 + \sigma^2}\Big)

    evaluated on the channel ``h`` it is given, with :math:`\sum_k \|w_k\|^2 = P` (``p_tx``).
    Start 0 is ``wmmse``'s own deterministic start (RZF or MRT, option ``init``), iterated with a
    tighter stopping rule than ``wmmse``'s; WMMSE never lowers the sum-rate from one update to
    the next, so every sample's sum-rate is at least ``wmmse``'s (ties keep start 0), and
    ``restarts=1, tol=1e-3, max_iter=100`` *is* ``wmmse``, bit for bit. Starts 1..N-1 are random
    beams in the row space of ``h``: :math:`W^{(r)} = c\, h^H T^{(r)}` with :math:`T^{(r)}` a
    ``K x K`` matrix of i.i.d. circular complex Gaussian entries and :math:`c` scaling the power to :math:`P`; WMMSE's first update puts any
    start into this space anyway. Start r is drawn in float64 on the block's device from its own
    generator, seeded with ``derive_seed(seed, r)`` afresh at every call: a call is a
    deterministic function of ``(h, p_tx, noise_var)`` for a given batch size and device, the same
    in single and double precision (a resumed sweep reproduces an uninterrupted one), and the
    starts of ``restarts=N`` are among those of ``restarts=N+1`` (more starts never lower a rate).

    It is the ceiling of *linear* precoding in linksim's figures (``dpc_bound`` is the non-linear,
    dirty-paper one: ``wmmse <= wmmse_best <= dpc_bound``). It is an ordinary ``precoder``, not a
    ``reference``: like ``wmmse`` it sees only the channel it is given (the estimated or predicted
    CSI in the loop task), returns beams, and its rate is measured on the true channel; only a
    limit that needs the truth itself (``dpc_bound``, ``genie``) is a reference.

    Choice of the defaults (measured on 256 drops of ``scenarios/quick.toml``: UMa, M = 16,
    K = 4, :math:`\sigma^2` = -10 dBW, centre subcarrier; mean bit/s/Hz at P = -10 / 0 / +10 dBW):
    ``wmmse`` 7.227 / 16.217 / 27.372; one start run to ``tol=1e-5`` 7.263 / 16.365 / 28.104;
    10 starts, ``tol=1e-5`` (the defaults) 7.278 / 16.490 / 28.339; 40 starts, ``tol=1e-6``
    7.279 / 16.492 / 28.364; ``dpc_bound`` 7.854 / 18.286 / 30.976. At high power WMMSE
    converges slowly, so most of the gain over ``wmmse`` comes from running it to convergence and
    the rest from the restarts; beyond 10 starts and ``tol=1e-5`` the mean moves by less than
    0.1 %. A call costs about 5x ``wmmse``'s CPU time at -10 dBW and 15x at +10 dBW (the
    ``quick.toml`` power sweep, 1024 drops, batches of 32); a start costs updates only while it
    runs.

    After each call: ``last_rates`` ``[N, b]`` float64 holds every start's final sum-rate,
    ``last_choice`` ``[b]`` int64 the start kept, and ``last_history`` ``[n+1, b]`` /
    ``last_iterations`` ``[b]`` those of the kept start (as in ``wmmse``).

    :param restarts: number of starting points :math:`N \ge 1`, the deterministic one included
        (default 10)
    :param seed: seed of the random starts; ``None``: derived from the scenario's ``run.seed``
        (``scenario=`` given, as :func:`linksim.blocks.get` does) or else ``linksim.config.seed``
    :param scenario: optional :class:`~linksim.Scenario`; only its ``run.seed`` is used
    :param tol: relative sum-rate change that stops a run (default 1e-5; ``wmmse``: 1e-3)
    :param max_iter: maximum number of WMMSE updates per run (default 1000; ``wmmse``: 100)
    :param init: the deterministic start, ``"rzf"`` (default) or ``"mrt"``
    :param bisect_steps: bisection steps for :math:`\mu` (default 50)
    :param precision: ``"single"`` (complex64 output) or ``"double"`` (complex128); ``None``:
        ``linksim.config.precision``
    :param device: device of the computation and the output; ``None``: ``linksim.config.device``

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input p_tx: float or [b] tensor. Total power budget :math:`P`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` (> 0).
    :input return_history: bool. Also return ``last_history`` (default `False`).

    :output w: [b, M, K], ``cdtype``. Precoder with :math:`\sum |w|^2 = P` per sample.
    :output history: [n+1, b], torch.float64. Sum-rate per iterate of the kept start; only with
        ``return_history=True``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import WMMSE, WMMSEBest, sum_rate
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        best = WMMSEBest(restarts=10, seed=0)
        w = best(h, 1.0, 0.1)                                    # [8, 16, 4] complex64
        gain = sum_rate(h, w, 0.1) - sum_rate(h, WMMSE()(h, 1.0, 0.1), 0.1)   # >= 0 (up to rounding)
        kept = best.last_choice                                  # [8], 0 = wmmse's own start
    """

    def __init__(self, restarts: int = DEFAULT_RESTARTS, seed: int | None = None, scenario=None,
                 tol: float = 1e-5, max_iter: int = 1000, init: str = "rzf", bisect_steps: int = 50,
                 precision: str | None = None, device=None):
        super().__init__(tol=tol, max_iter=max_iter, init=init, bisect_steps=bisect_steps,
                         precision=precision, device=device)
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise LinksimError(f"wmmse_best: restarts must be an integer >= 1, got {restarts!r}")
        if seed is None:
            seed = derive_seed(scenario.run.seed if scenario is not None else config.seed, "wmmse_best")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise LinksimError(f"wmmse_best: seed must be an integer >= 0, got {seed!r}")
        self.restarts, self.seed = restarts, seed
        self.last_rates: torch.Tensor | None = None
        self.last_choice: torch.Tensor | None = None

    def _starts(self, g, s2, ptx):
        """All starting points stacked start-major: ``T [N*b, K, K]`` at power ``ptx``. Start r >= 1
        has its own generator (seed ``derive_seed(seed, r)``), so it does not depend on N."""
        b, k, _ = g.shape
        starts = [self._initial(g, s2, ptx)]
        for r in range(1, self.restarts):
            gen = generator(derive_seed(self.seed, r), g.device)
            x = torch.randn((b, k, k, 2), generator=gen, device=g.device, dtype=torch.float64)
            t = torch.view_as_complex(x)
            starts.append(t * torch.sqrt(ptx / _power_k(g, t).clamp_min(1e-300))[:, None, None])
        return torch.cat(starts)

    @torch.no_grad()
    def forward(self, h, p_tx, noise_var, return_history: bool = False):
        h, p_tx, noise_var = _c128(self.cast(h)), self.cast(p_tx), self.cast(noise_var)
        b, k, _ = h.shape
        n = self.restarts
        ptx = positive(per_sample(p_tx, b, h.device), "wmmse_best: p_tx")
        s2 = positive(per_sample(noise_var, b, h.device), "wmmse_best: noise_var")
        g = _gram(h)
        t0 = self._starts(g, s2, ptx)
        t, rate, hist, iters = self._iterate(g.repeat(n, 1, 1), t0, s2.repeat(n), ptx.repeat(n))
        rate = rate.reshape(n, b)
        best = rate.argmax(0)                                  # first maximum: ties keep start 0
        pick = best * b + torch.arange(b, device=h.device)     # row of (start, sample) in N*b
        self.last_rates, self.last_choice = rate, best
        self.last_history, self.last_iterations = hist[:, pick], iters[pick]
        w = (h.mH @ t[pick]).to(self.cdtype)
        return (w, self.last_history) if return_history else w
