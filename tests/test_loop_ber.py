"""Uncoded QAM BER of the in-the-loop chain against independent references.

References: a slow numpy re-derivation of the downlink (same symbols and noise, Sionna's points
taken from Sionna directly, decisions by brute-force nearest point), the closed-form Gray 16-QAM
bit error probability for a single MRT user, and the noiseless, interference-free limit of ZF.
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import erfc
from sionna.phy.mapping import Constellation

import linksim
from linksim.chains import LoopBlock
from linksim.chains.loop import LoopChain

from conftest import tiny


def loop_block(predictor, precoder, sc):
    return LoopBlock(linksim.blocks.get(predictor, "predictor", sc), linksim.blocks.get(precoder, "precoder", sc))


def run(sc, blocks, x_name=None, x=None):
    chain = LoopChain(sc)
    point = chain.point(x_name, x)
    acc = chain.run_point({name: loop_block(*name.split("+"), sc) for name in blocks}, point)
    return {name: {m: a.result() for m, a in ms.items()} for name, ms in acc.items()}, chain, point


def rayleigh(**sections):
    base = {"channel": {"model": "rayleigh", "speed_kmh": 30.0}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return tiny(**base)


def test_zf_with_perfect_csi_at_high_power_makes_no_errors_and_aged_csi_does():
    sc = rayleigh(channel={"speed_kmh": 100.0}, precoding={"tx_power_dbw": 50.0, "subcarriers": "all"},
                  prediction={"num_samples": 8})
    res, _, _ = run(sc, ["genie+zf", "outdated+zf"])
    ber, lo, hi, n = res["genie+zf"]["ber"]
    # 8 drops x 4 steps x 48 subcarriers x 2 users x 6 symbols x 4 bits
    assert n == 8 * 4 * 48 * 2 * 6 * 4 and ber == 0.0 and hi < 1e-4
    # aged CSI leaves inter-user interference that no power removes
    assert res["outdated+zf"]["ber"][0] > 1e-3


def test_reference_precoder_has_a_rate_but_no_ber_row():
    sc = rayleigh(prediction={"num_samples": 8})
    res, _, _ = run(sc, ["genie+dpc_bound", "genie+wmmse"])
    assert "ber" not in res["genie+dpc_bound"] and "sum_rate" in res["genie+dpc_bound"]
    assert res["genie+dpc_bound"]["sum_rate"][0] >= res["genie+wmmse"]["sum_rate"][0]
    assert 0 <= res["genie+wmmse"]["ber"][0] < 0.5


def _np_bit_errors(batch, w_of, p_tx, noise_var):
    """Slow numpy re-derivation of the chain's count: outdated CSI, every subcarrier, loops."""
    fut, hist = batch["future"].numpy(), batch["hist"].numpy()           # [b, P|L, K, M, F]
    idx, noise = batch["qam_idx"].numpy(), batch["qam_noise"].numpy().astype(np.complex128)
    b, n_steps, k, m, f = fut.shape
    pts = Constellation("qam", 4, precision="double")().numpy()
    errors = 0
    for t in range(n_steps):
        h_hat = hist[:, -1]                                              # outdated: last sample held
        rows = np.ascontiguousarray(h_hat.transpose(0, 3, 1, 2).reshape(b * f, k, m))
        w = w_of(torch.from_numpy(rows), p_tx, noise_var).numpy().astype(np.complex128)
        for d in range(b):
            for sub in range(f):
                row = d * f + sub
                h = fut[d, t, :, :, sub].astype(np.complex128)               # K x M, user k: h[k] @ w @ s
                for u in range(k):
                    gains = h[u] @ w[row]                                    # [K]: h_u w_j
                    for s in range(idx.shape[-1]):
                        y = sum(gains[j] * pts[idx[t, row, j, s]] for j in range(k)) + noise[t, row, u, s]
                        dec = int(np.argmin(np.abs(y / gains[u] - pts) ** 2))
                        sent = int(idx[t, row, u, s])
                        errors += bin(dec ^ sent).count("1")
    return errors


def test_counted_errors_match_a_numpy_rederivation_exactly():
    sc = rayleigh(channel={"speed_kmh": 60.0}, precoding={"tx_power_dbw": 3.0, "subcarriers": "all"},
                  prediction={"num_samples": 8})
    chain = LoopChain(sc)
    point = chain.point()
    batch = next(iter(chain.batches(point)))
    blk = loop_block("outdated", "rzf", sc)
    acc = chain.new_metrics()
    chain.measure(blk, batch, acc)
    errors, n = acc["ber"].errors, acc["ber"].n
    assert n == batch["qam_idx"].numel() * 4
    assert errors == _np_bit_errors(batch, blk.precoder, batch["p_tx"], batch["noise_var"])
    assert 0.01 < errors / n < 0.3        # a regime where decisions do go wrong
    # the users' noise has the [precoding] variance (0.1 W): 18432 samples, sd of the mean ~0.7 %
    nv = np.mean(np.abs(batch["qam_noise"].numpy()) ** 2)
    assert abs(nv / 0.1 - 1) < 0.03


def _q(x):
    return 0.5 * erfc(x / math.sqrt(2))


def test_single_mrt_user_matches_gray_16qam_closed_form():
    """One user, MRT, perfect CSI: the equalised symbol is s + n/g with SNR g^2/s2 = P |h|^2/s2.
    Per real dimension (Gray 4-PAM, levels +-d, +-3d, a = d/sigma = sqrt(SNR/5)) the sign bit
    fails w.p. (Q(a) + Q(3a))/2 and the inner/outer bit w.p. (2Q(a) + Q(3a) - Q(5a))/2, so the
    BER is (3Q(a) + 2Q(3a) - Q(5a))/4. The expected count and its exact variance (the two bits of
    a dimension are dependent: both fail w.p. (2Q(3a) - Q(5a))/2) follow from the channels."""
    p_dbw, s2_dbw = 0.0, -6.0
    sc = rayleigh(precoding={"num_users": 1, "tx_power_dbw": p_dbw, "noise_power_dbw": s2_dbw,
                             "subcarriers": "all"},
                  prediction={"num_samples": 32})
    res, chain, point = run(sc, ["genie+mrt"])
    ber, _, _, n = res["genie+mrt"]["ber"]
    mean = var = 0.0
    slots = sc.detection.symbols_per_sample
    for batch in chain.batches(point):
        h = batch["future"].numpy().astype(np.complex128)                   # [b, P, 1, M, F]
        snr = 10 ** ((p_dbw - s2_dbw) / 10) * (np.abs(h[:, :, 0]) ** 2).sum(axis=2)
        a = np.sqrt(snr / 5)
        e1, e2 = (_q(a) + _q(3 * a)) / 2, (2 * _q(a) + _q(3 * a) - _q(5 * a)) / 2
        both = (2 * _q(3 * a) - _q(5 * a)) / 2
        e = e1 + e2                                                          # bit errors per dimension
        mean += 2 * slots * e.sum()
        var += 2 * slots * (e + 2 * both - e * e).sum()
    assert n == 32 * 4 * 48 * slots * 4
    z = (ber * n - mean) / math.sqrt(var)
    assert abs(z) < 3.5, (ber, mean / n, z)
    assert 5e-3 < ber < 0.1                  # a regime the test can resolve (~thousands of errors)
