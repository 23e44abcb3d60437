"""Accumulators against textbook formulas (independent of the code: scipy/numpy by hand)."""
import math

import numpy as np
import torch
from scipy import stats

from linksim.metrics import NMSE, ErrorRate, Mean


def test_error_rate_clopper_pearson():
    acc = ErrorRate()
    for e, n in ((3, 100), (7, 400)):
        acc.update(e, n)
    v, lo, hi, n = acc.result()
    assert (v, n) == (10 / 500, 500)
    # exact binomial interval: P(X >= 10 | lo) = 0.025 and P(X <= 10 | hi) = 0.025
    assert math.isclose(stats.binom.sf(9, 500, lo), 0.025, rel_tol=1e-6)
    assert math.isclose(stats.binom.cdf(10, 500, hi), 0.025, rel_tol=1e-6)
    zero = ErrorRate()
    zero.update(0, 1000)
    v, lo, hi, _ = zero.result()
    assert v == 0 and lo == 0 and math.isclose(hi, 1 - 0.025 ** (1 / 1000), rel_tol=1e-6)


def test_mean_interval_matches_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, 1000)
    acc = Mean()
    acc.update(torch.tensor(x[:300]))
    acc.update(torch.tensor(x[300:]))
    v, lo, hi, n = acc.result()
    half = 1.96 * x.std(ddof=1) / math.sqrt(1000)
    assert n == 1000 and math.isclose(v, x.mean(), rel_tol=1e-12)
    assert math.isclose(hi - v, half, rel_tol=1e-3) and math.isclose(v - lo, half, rel_tol=1e-3)


def test_nmse_is_ratio_of_sums_and_interval_covers():
    rng = np.random.default_rng(1)
    p = rng.exponential(1.0, 5000)
    e = 0.01 * p * rng.exponential(1.0, 5000)
    acc = NMSE()
    acc.update(torch.tensor(e), torch.tensor(p))
    v, lo, hi, n = acc.result()
    assert math.isclose(v, 10 * math.log10(e.sum() / p.sum()), rel_tol=1e-9)
    assert lo < v < hi and lo < -20 < hi   # true ratio E[e]/E[p] = 0.01 -> -20 dB
    # bootstrap width agrees with the delta-method width within 20 %
    boots = [10 * math.log10(e[i].sum() / p[i].sum())
             for i in (rng.integers(0, 5000, 5000) for _ in range(400))]
    assert abs((hi - lo) / (np.percentile(boots, 97.5) - np.percentile(boots, 2.5)) - 1) < 0.2
