"""Metric accumulators: they count errors and sums, never average ratios, and give 95% intervals.

Each accumulator has ``update(...)`` and ``result() -> (value, ci_low, ci_high, n)``.
"""
from __future__ import annotations

import math

import torch
from scipy import stats

Z95 = 1.959963984540054


class ErrorRate:
    """Error counter (SER, BER, BLER): value = errors / n, Clopper-Pearson exact 95% interval."""

    def __init__(self):
        self.errors = 0
        self.n = 0

    def update(self, errors: int | torch.Tensor, n: int) -> None:
        self.errors += int(errors)
        self.n += int(n)

    def result(self):
        e, n = self.errors, self.n
        if n == 0:
            return float("nan"), float("nan"), float("nan"), 0
        lo = 0.0 if e == 0 else float(stats.beta.ppf(0.025, e, n - e + 1))
        hi = 1.0 if e == n else float(stats.beta.ppf(0.975, e + 1, n - e))
        return e / n, lo, hi, n


class Mean:
    """Sample mean of per-sample values (e.g. sum-rate per channel snapshot), normal 95% interval."""

    def __init__(self):
        self.s = 0.0
        self.s2 = 0.0
        self.n = 0

    def update(self, values: torch.Tensor) -> None:
        v = values.detach().double().reshape(-1)
        self.s += float(v.sum())
        self.s2 += float(v.square().sum())
        self.n += v.numel()

    def result(self):
        n = self.n
        if n == 0:
            return float("nan"), float("nan"), float("nan"), 0
        m = self.s / n
        var = max(self.s2 / n - m * m, 0.0) * n / max(n - 1, 1)
        half = Z95 * math.sqrt(var / n)
        return m, m - half, m + half, n


class NMSE:
    """Normalised MSE as a ratio of sums, sum ||x_hat - x||^2 / sum ||x||^2, reported in dB.

    Updated with per-sample error and power ``[n]``; the 95% interval of the ratio uses the delta
    method on the per-sample pairs and is mapped to dB (a lower limit <= 0 maps to -inf).
    """

    def __init__(self):
        self.se = self.sp = self.see = self.spp = self.sep = 0.0
        self.n = 0

    def update(self, err: torch.Tensor, power: torch.Tensor) -> None:
        e = err.detach().double().reshape(-1)
        p = power.detach().double().reshape(-1)
        self.se += float(e.sum())
        self.sp += float(p.sum())
        self.see += float((e * e).sum())
        self.spp += float((p * p).sum())
        self.sep += float((e * p).sum())
        self.n += e.numel()

    @property
    def ratio(self) -> float:
        return self.se / self.sp if self.sp > 0 else float("nan")

    def result(self):
        n = self.n
        if n == 0 or self.sp <= 0:
            return float("nan"), float("nan"), float("nan"), n
        r = self.ratio
        # variance of d_i = e_i - r p_i, around its mean 0
        var_d = (self.see - 2 * r * self.sep + r * r * self.spp) / max(n - 1, 1)
        pbar = self.sp / n
        half = Z95 * math.sqrt(max(var_d, 0.0) / n) / pbar
        to_db = lambda x: 10 * math.log10(x) if x > 0 else float("-inf")  # noqa: E731
        return to_db(r), to_db(r - half), to_db(r + half), n


def nmse_db(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """NMSE in dB over all elements, a ratio of sums: 10 log10(sum |x_hat - x|^2 / sum |x|^2)."""
    err = float((x_hat - x).abs().square().sum())
    ref = float(x.abs().square().sum())
    return 10 * math.log10(max(err, 1e-300) / max(ref, 1e-300))


class F1:
    r"""F1 score of a binary classification, counted: TP, FP, FN, TN over all samples.

    .. math::
        F_1 = \frac{2\,TP}{2\,TP + FP + FN}

    The 95% interval is the delta method on the multinomial proportions
    :math:`(p_{TP}, p_{FP}, p_{FN})` of the ``n`` samples, clipped to [0, 1].

    :input pred, truth: (in ``update``) [...] bool tensors, the predicted and true positive class.
    """

    def __init__(self):
        self.tp = self.fp = self.fn = self.tn = 0

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        pred, truth = pred.reshape(-1).bool(), truth.reshape(-1).bool()
        self.tp += int((pred & truth).sum())
        self.fp += int((pred & ~truth).sum())
        self.fn += int((~pred & truth).sum())
        self.tn += int((~pred & ~truth).sum())

    def result(self):
        n = self.tp + self.fp + self.fn + self.tn
        den = 2 * self.tp + self.fp + self.fn
        if n == 0 or den == 0:
            return float("nan"), float("nan"), float("nan"), n
        a, b, c = self.tp / n, self.fp / n, self.fn / n
        d = 2 * a + b + c
        f = 2 * a / d
        grad = torch.tensor([2 * (b + c) / d ** 2, -2 * a / d ** 2, -2 * a / d ** 2], dtype=torch.float64)
        p = torch.tensor([a, b, c], dtype=torch.float64)
        cov = (torch.diag(p) - p[:, None] * p[None, :]) / n
        half = Z95 * math.sqrt(max(float(grad @ cov @ grad), 0.0))
        return f, max(f - half, 0.0), min(f + half, 1.0), n


class RMSE:
    r"""Root mean square error of per-sample errors (e.g. dB): :math:`\sqrt{\frac1n\sum_i e_i^2}`.

    The 95% interval maps the normal interval of the mean squared error through the square root
    (its lower end floored at 0).

    :input err: (in ``update``) [...] real tensor, per-sample errors.
    """

    def __init__(self):
        self.sq = Mean()

    def update(self, err: torch.Tensor) -> None:
        self.sq.update(err.detach().double().square())

    def result(self):
        m, lo, hi, n = self.sq.result()
        if n == 0:
            return m, lo, hi, n
        return math.sqrt(m), math.sqrt(max(lo, 0.0)), math.sqrt(hi), n


class Quantile:
    r"""The ``q`` quantile of per-sample values (e.g. the 90th percentile of position errors).

    Keeps the values; the value is the order statistic :math:`x_{(\lceil qn \rceil)}`, and the
    distribution-free 95% interval is :math:`[x_{(j)}, x_{(k)}]` with ``j``, ``k`` the 2.5% and
    97.5% points of Binomial(n, q) (clipped to the sample).

    :param q: the quantile, in (0, 1)
    :input values: (in ``update``) [...] real tensor.
    """

    def __init__(self, q: float = 0.9):
        self.q = float(q)
        self.values: list[torch.Tensor] = []
        self.n = 0

    def update(self, values: torch.Tensor) -> None:
        v = values.detach().double().reshape(-1).cpu()
        self.values.append(v)
        self.n += v.numel()

    def result(self):
        n = self.n
        if n == 0:
            return float("nan"), float("nan"), float("nan"), 0
        x = torch.sort(torch.cat(self.values)).values
        at = lambda i: float(x[min(max(int(i), 1), n) - 1])  # noqa: E731  (1-based order statistic)
        j = stats.binom.ppf(0.025, n, self.q)
        k = stats.binom.ppf(0.975, n, self.q) + 1
        return at(math.ceil(self.q * n)), at(j), at(k), n
