r"""``wiener``: one fixed linear MMSE predictor from the temporal covariance of a channel pool."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from ...channel.pool import GENERATOR_VERSION
from ...config import derive_seed
from ...errors import LinksimError
from ...registry import register_block
from .classical import _check_hist, _Predictor

POOL_DROPS = 128                 # drops of the pool the statistics come from
POOL_SPEED_KMH = (10.0, 100.0)   # user speeds of the pool, uniform per user (agents' training default)


def temporal_covariance(h: torch.Tensor) -> torch.Tensor:
    r"""Empirical temporal covariance of per-user channel series, averaged over the population.

    Each (drop, user) is scaled to unit mean power over its time samples and remaining entries,
    then

    .. math::
        R_{ij} = \frac{1}{n K N} \sum_{d,k,e} h_{d,k,e}[i]\, h_{d,k,e}[j]^*

    over the ``n`` drops, ``K`` users and ``N`` entries (antennas x subcarriers) of each user.

    :input h: [n, T, K, ...], complex. Drops of ``T`` time samples.

    :output R: [T, T], torch.complex128. Hermitian, positive semi-definite.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.predictors.wiener import temporal_covariance
        h = torch.randn(8, 20, 2, 4, 6, dtype=torch.complex64)
        R = temporal_covariance(h)                                   # [20, 20]
        assert torch.allclose(R.diagonal().real.mean(), torch.tensor(1.0, dtype=torch.float64))
    """
    n, n_t, k = h.shape[:3]
    cov = torch.zeros(n_t, n_t, dtype=torch.complex128, device=h.device)
    count = 0
    for lo in range(0, n, 64):                              # bounded memory for large pools
        x = h[lo:lo + 64].to(torch.complex128).reshape(-1, n_t, k, h[0, 0, 0].numel())
        x = x.permute(0, 2, 1, 3)                                                  # [d, K, T, N]
        rms = x.abs().square().mean(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-30)
        x = x / rms
        cov += torch.einsum("dkin,dkjn->ij", x, x.conj())
        count += x.shape[0] * x.shape[1] * x.shape[3]
    return cov / count


def wiener_taps(cov: torch.Tensor, history: int, noise_var: float) -> torch.Tensor:
    r"""The linear MMSE predictor of the last ``T - L`` samples from the first ``L`` noisy ones.

    .. math::
        \mathbf{W} = \mathbf{R}_{fh}\left(\mathbf{R}_{hh} + \sigma^2\mathbf{I}_L\right)^{-1},
        \qquad \hat{\mathbf{h}}_f = \mathbf{W}\,\mathbf{y}_h, \qquad
        \mathbf{y}_h = \mathbf{h}_h + \mathbf{n}, \ \mathbf{n}\sim\mathcal{CN}(\mathbf{0}, \sigma^2\mathbf{I})

    with :math:`\mathbf{R}_{hh} = \mathbf{R}[:L, :L]` and :math:`\mathbf{R}_{fh} = \mathbf{R}[L:, :L]`.

    :input cov: [T, T], complex. Temporal covariance :math:`R_{ij} = E[h[i] h[j]^*]`.
    :input history: int. :math:`L`, ``1 <= L < T``.
    :input noise_var: float. :math:`\sigma^2` of the history noise (>= 0).

    :output W: [T-L, L], torch.complex128. Row ``j`` predicts sample ``L + j``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.predictors.wiener import wiener_taps
        t = torch.arange(20.0, dtype=torch.float64)
        R = (0.9 ** (t[:, None] - t[None, :]).abs()).to(torch.complex128)   # AR(1), a = 0.9
        W = wiener_taps(R, 16, 0.0)                                          # [4, 16]
        assert torch.allclose(W[:, -1].real, 0.9 ** torch.arange(1.0, 5.0, dtype=torch.float64))
    """
    cov = cov.to(torch.complex128)
    n_l = int(history)
    if not 1 <= n_l < cov.shape[0]:
        raise LinksimError(f"wiener: history must be in [1, {cov.shape[0] - 1}], got {history!r}")
    r_hh, r_fh = cov[:n_l, :n_l], cov[n_l:, :n_l]
    a = r_hh + float(noise_var) * torch.eye(n_l, dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve(a, r_fh.mH).mH.resolve_conj()     # R_fh A^-1, A Hermitian


def _fit_scenario(sc, horizon: int):
    """The parts of ``sc`` the pool depends on, in a canonical scenario (single precision, CPU,
    fixed batch size) so that precision, device and the other sections share one fit."""
    from ...scenario import from_dict, to_dict

    pred = sc.prediction
    return from_dict({"name": "wiener-pool", "channel": to_dict(sc)["channel"],
                      "prediction": {"num_users": pred.num_users, "history": pred.history,
                                     "horizon": int(horizon)},
                      "run": {"seed": 0, "batch_size": 32, "device": "cpu", "precision": "single"}})


@register_block("wiener", "predictor")
class WienerPredictor(_Predictor):
    r"""Wiener (linear MMSE) prediction with one tap matrix for all samples, from pool statistics.

    CSI-4CAST's population "AR/Wiener": the temporal covariance :math:`\mathbf{R}` of the
    ``(L+P)``-sample series of a channel pool of the scenario (every user's series scaled to unit
    RMS, averaged over users, antennas, subcarriers and drops; :func:`temporal_covariance`) gives
    the fixed complex ``P x L`` taps

    .. math::
        \mathbf{W} = \mathbf{R}_{fh}\left(\mathbf{R}_{hh} + \sigma^2\mathbf{I}_L\right)^{-1}, \qquad
        \hat{\mathbf{H}}[t+j] = \sum_{i=1}^{L} W_{j,i}\, \mathbf{H}[t-L+i]

    applied to every entry of every sample (:func:`wiener_taps`), with :math:`\sigma^2 =
    10^{-\mathrm{snr\_db}/10}` (linksim's channels have unit average gain per entry). Unlike
    ``ar`` nothing is fitted per sample: the taps are those of the population's average Doppler
    spectrum, so at a given speed they trail a per-sample fit.

    The pool (``pool_drops`` drops, speeds uniform in ``speed_kmh`` per user) is drawn once with
    :func:`linksim.channel.pool.channel_pool` from the scenario's channel, ``num_users`` and
    ``history`` (precision, device and the other sections do not enter); its covariance is cached
    in ``<cache_root>/wiener/<key>.safetensors`` (``$LINKSIM_CACHE`` or ``~/.cache/linksim``),
    keyed by those and the pool options, so a second construction reads it back (the taps follow
    in microseconds). The first fit of ``scenarios/quick.toml`` (128 drops) takes ~5 s on one core.

    Measured with ``linksim sweep scenarios/quick.toml --task prediction --over speed_kmh=10,100``
    (UMa NLOS 2.4 GHz, 4x4 array, L=16, P=4, 20 dB history SNR, 512 drops per point; NMSE in dB at
    10 / 100 km/h): ``wiener`` (default 10-100 km/h pool) -9.3 / -3.1, ``ar`` -22.8 / -8.5,
    ``pad`` -20.6 / -10.1, ``outdated`` -15.8 / +0.6. The population taps serve the average user
    of the pool, whose error is dominated by the fast ones, so at 10 km/h they do worse than
    repeating the last sample; taps from a pool at the evaluation speed (``speed_kmh=10`` /
    ``100``) gave -21.7 / -6.6 (on 64 of those drops), as did the covariance of the evaluation
    drops themselves. A sweep over ``snr_db`` keeps the taps of the SNR the block was built with.

    :param horizon: number of future samples :math:`P`
    :param snr_db: history SNR [dB] the taps assume (``None``: the scenario's ``prediction.snr_db``)
    :param pool_drops: drops in the pool
    :param speed_kmh: ``(low, high)`` user speeds of the pool [km/h] (or one speed)
    :param seed: seed of the pool (``None``: derived from the scenario's ``run.seed``)
    :param cache: read and write the covariance cache
    :param scenario: a :class:`~linksim.Scenario` (required): the channel the pool comes from;
        :func:`linksim.blocks.get` passes it
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input h_hist: [b, L, ...], complex (or real). Channel history, oldest first; ``L`` the
        scenario's ``prediction.history``. Any trailing layout (``[K, M, F]``, ``[N]``, ...): the
        taps act on every entry.

    :output h_future: [b, P, ...], ``cdtype`` (``dtype``: the real part, for real inputs).

    .. rubric:: Examples

    .. code-block:: python

        import torch, linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        wiener = linksim.blocks.get("wiener", kind="predictor", scenario=sc)    # fits once, cached
        h = linksim.ChannelSource(sc, seed=1).sample(4, speed_kmh=30.0)         # [4, 20, 4, 16, 48]
        h_pred = wiener(h[:, :16])                                              # [4, 4, 4, 16, 48]
        assert wiener.taps.shape == (4, 16)
    """

    name = "wiener"

    def __init__(self, horizon: int = 4, snr_db: float | None = None, pool_drops: int = POOL_DROPS,
                 speed_kmh=POOL_SPEED_KMH, seed: int | None = None, cache: bool = True, scenario=None,
                 precision: str | None = None, device: str | torch.device | None = None):
        super().__init__(horizon, precision=precision, device=device)
        if scenario is None:
            raise LinksimError("wiener: needs a scenario to draw its channel pool from "
                               "(linksim.blocks.get('wiener', scenario=sc))")
        if int(pool_drops) != pool_drops or pool_drops < 1:
            raise LinksimError(f"wiener: pool_drops must be an integer >= 1, got {pool_drops!r}")
        speed = (speed_kmh, speed_kmh) if isinstance(speed_kmh, (int, float)) else tuple(speed_kmh)
        if len(speed) != 2 or not 0 <= speed[0] <= speed[1]:
            raise LinksimError(f"wiener: speed_kmh must be a speed or (low, high) with "
                               f"0 <= low <= high, got {speed_kmh!r}")
        self.snr_db = float(scenario.prediction.snr_db if snr_db is None else snr_db)
        self.pool_drops, self.speed_kmh = int(pool_drops), (float(speed[0]), float(speed[1]))
        self.seed = derive_seed(scenario.run.seed, "wiener-pool") if seed is None else int(seed)
        self.history = scenario.prediction.history
        fit = _fit_scenario(scenario, self.horizon)
        self.key = hashlib.sha256(repr((fit.hash, self.pool_drops, self.speed_kmh, self.seed,
                                        GENERATOR_VERSION)).encode()).hexdigest()[:20]
        cov = self._cached() if cache else None
        if cov is None:
            cov = self._fit(fit)
            if cache:
                self._store(cov)
        self.register_buffer("covariance", cov, persistent=False)                  # [L+P, L+P]
        taps = wiener_taps(cov, self.history, 10 ** (-self.snr_db / 10))
        self.register_buffer("taps", taps.to(device=self.device, dtype=self.cdtype), persistent=False)

    # -------------------------------------------------------------- pool statistics
    @property
    def cache_path(self) -> Path:
        """Where the covariance of this block's pool is cached."""
        from ...config import cache_root

        return cache_root() / "wiener" / f"{self.key}.safetensors"

    def _fit(self, fit) -> torch.Tensor:
        from ...channel.pool import channel_pool

        pred = fit.prediction
        with tempfile.TemporaryDirectory(prefix="linksim-wiener-") as tmp:
            pool = channel_pool(fit, self.pool_drops, self.seed, self.speed_kmh, Path(tmp),
                                num_users=pred.num_users, num_time=pred.history + pred.horizon,
                                tag="prediction")
        return temporal_covariance(pool)

    def _cached(self) -> torch.Tensor | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path, n_t = self.cache_path, self.history + self.horizon
        if not path.is_file():
            return None
        try:
            cov = torch.view_as_complex(load_file(path)["covariance"].contiguous())
        except (SafetensorError, OSError, KeyError, RuntimeError):   # damaged, unreadable, no
            return None          # covariance, not [..., 2]: the file is fitted again and overwritten
        ok = cov.shape == (n_t, n_t) and bool(torch.isfinite(torch.view_as_real(cov)).all())
        return cov if ok else None

    def _store(self, cov: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self.cache_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")      # same folder: os.replace is atomic
        try:
            meta = {"pool_drops": str(self.pool_drops), "speed_kmh": repr(self.speed_kmh),
                    "seed": str(self.seed), "history": str(self.history), "horizon": str(self.horizon)}
            save_file({"covariance": torch.view_as_real(cov.cpu()).contiguous()}, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -------------------------------------------------------------- prediction
    def forward(self, h_hist: torch.Tensor) -> torch.Tensor:
        h_hist = self._series(h_hist)
        _check_hist("wiener", h_hist)
        if h_hist.shape[1] != self.history:
            raise LinksimError(f"wiener: taps fitted for L={self.history} history samples, got "
                               f"L={h_hist.shape[1]}")
        x = h_hist if h_hist.is_complex() else h_hist.to(self.cdtype)
        b, rest = x.shape[0], x.shape[2:]
        y = torch.einsum("pl,bln->bpn", self.taps, x.reshape(b, self.history, -1))
        y = y.reshape(b, self.horizon, *rest)
        return y if h_hist.is_complex() else y.real


__all__ = ["POOL_DROPS", "POOL_SPEED_KMH", "WienerPredictor", "temporal_covariance", "wiener_taps"]
