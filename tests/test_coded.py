"""Coded uplink (task ``coded``): the LDPC round trip, BLER at the SNR extremes, the pilot-estimated
post-detection noise against LMMSE's closed form, LLR signs against nearest-point decisions,
reproducibility, the stopping rule, bad keys, and the sweep's rows."""
import math

import numpy as np
import pytest
import torch

import linksim
from linksim.blocks.qam import hard_decision, symbols_to_bits
from linksim.chains import chain_class
from linksim.chains.coded import CodedChain, coded_batch, receive
from linksim.chains.coding import FrameLayout, LinkCode
from linksim.errors import LinksimError
from linksim.results import read_rows
from linksim.sweep import sweep

from conftest import tiny

# 8 antennas, K = 2, 24 subcarriers x 6 slots, one pilot slot: 120 data elements per user and
# drop = 480 bits = two codewords of n = 240 (k = 120)
CODED = {"coded_block_bits": 240, "min_samples": 8, "max_samples": 16, "target_block_errors": 20}


def _sc(snr_db=10.0, model="rayleigh", **coded):
    return tiny(channel={"model": model, "num_subcarriers": 24}, detection={"snr_db": snr_db},
                coded=CODED | coded)


def _bler(sc, name="lmmse"):
    chain = CodedChain(sc)
    acc = chain.run_point({name: linksim.blocks.get(name, "detector", sc)}, chain.point())
    return acc[name]


def test_registered_and_layout():
    assert chain_class("coded") is CodedChain and CodedChain.kind == "detector"
    lay = CodedChain(_sc()).layout
    assert (lay.k, lay.n, lay.codewords, lay.data_res, lay.used_res) == (120, 240, 2, 120, 120)
    lay = CodedChain(_sc(coded_block_bits=200)).layout          # 50 symbols: two fit, 20 filler
    assert (lay.codewords, lay.used_res) == (2, 100)


def test_ldpc_round_trip_without_noise_and_with_flipped_llrs():
    code = LinkCode(FrameLayout(24, 6, 1, 4, 240, 120))
    u = torch.randint(0, 2, (64, 120), generator=torch.Generator().manual_seed(0)).float()
    s = code.encode(u)
    assert s.shape == (64, 60) and abs(float(s.abs().square().mean()) - 1) < 0.1
    llr = code.llr(s, torch.tensor(1e-3))
    assert torch.equal(code.decode(llr), u)                    # noiseless: no block error
    wrong = code.decode(-llr) != u                             # every LLR inverted: all blocks wrong
    assert bool(wrong.any(-1).all())


def test_bler_zero_at_high_snr_and_near_one_at_low_snr():
    hi = _bler(_sc(40.0))
    assert hi["bler"].errors == 0 and hi["ber"].errors == 0
    assert hi["bler"].n == 16 * 2 * 2                           # ran to max_samples (no errors)
    lo = _bler(_sc(-10.0))
    assert lo["bler"].result()[0] > 0.9 and lo["ber"].result()[0] > 0.05


def _lmmse_closed_form(h: np.ndarray, noise_var: float):
    """Unbiased LMMSE error variance per (row, user): e/(1-e), e = diag((I + H^H H/s2)^-1), the
    biased (plain) LMMSE MSE; numpy float64."""
    g = np.conj(np.swapaxes(h, 1, 2)) @ h / noise_var
    e = np.real(np.diagonal(np.linalg.inv(np.eye(h.shape[2]) + g), axis1=1, axis2=2))
    return e / (1 - e), e


def test_pilot_noise_variance_matches_lmmse_closed_form():
    """Per user, the sum over drops of the pilot estimates against the sum of the closed form
    averaged over each drop's subcarriers, with a z-score from |e|^2 ~ Exp(s) per pilot. The two
    users have very different gains, so a users/subcarriers mix-up would fail; the biased MSE e
    (instead of e/(1-e), the variance of linksim's unbiased lmmse) is rejected."""
    b, f, m, k, noise_var = 32, 24, 8, 2, 10 ** 0.3           # SNR -3 dB
    gen = torch.Generator().manual_seed(1)
    h = torch.complex(torch.randn(b * f, m, k, generator=gen), torch.randn(b * f, m, k, generator=gen))
    h = h / math.sqrt(2) * torch.tensor([1.0, 0.4])             # user 1: -8 dB weaker
    lay = FrameLayout(f, 6, 2, 4, 240, 120)                    # two pilot slots: 48 pilots per user
    batch = coded_batch(h, noise_var, lay, LinkCode(lay), gen)
    est = receive(linksim.blocks.get("lmmse", "detector"), batch)["noise_var"].double().numpy()   # [b, K]
    s, e = (v.reshape(b, f, k) for v in _lmmse_closed_form(h.numpy().astype(np.complex128), noise_var))
    n_pilots = f * lay.pilot_slots
    sd = np.sqrt((lay.pilot_slots * s ** 2).sum(axis=(0, 1))) / n_pilots     # [K] std of sum of estimates
    z = (est.sum(0) - s.mean(1).sum(0)) / sd
    z_biased = (est.sum(0) - e.mean(1).sum(0)) / sd
    assert s.mean() > 0.2 and s[..., 1].mean() > 3 * s[..., 0].mean()         # a regime where it matters
    assert np.all(np.abs(z) < 4), z
    assert np.all(z_biased > 6), z_biased


@pytest.mark.parametrize("method", ["maxlog", "app"])
def test_llr_signs_agree_with_nearest_point_decisions(method):
    """The codeword symbols sit at elements r = (t-P)F + f (taken out of the frame here by direct
    indexing). The LLRs of the received data symbols against the bit labels of the nearest
    constellation point: identical for maxlog, and for app everywhere but a few symbols near the
    inner decision boundaries."""
    sc = _sc(8.0, demapping=method)
    chain = CodedChain(sc)
    batch = next(iter(chain.batches(chain.point())))
    out = receive(linksim.blocks.get("lmmse", "detector", sc), batch)
    lay = chain.layout
    b, _, k, _ = out["x_hat"].shape
    sent = _data(batch["x"], lay).reshape(b, k, lay.codewords, lay.symbols_per_codeword)
    assert torch.equal(sent, chain.code.encode(batch["bits"]))            # frequency-first layout
    bits = symbols_to_bits(hard_decision(_data(out["x_hat"], lay), 4)[0], 4)
    bits = bits.reshape(b, k, lay.codewords, lay.n)
    agree = ((out["llr"] > 0).long() == bits).float().mean().item()
    assert agree == 1.0 if method == "maxlog" else agree > 0.99
    # at 8 dB the hard decisions have errors, so the agreement is not that of error-free symbols
    wrong = bits != symbols_to_bits(hard_decision(_data(batch["x"], lay), 4)[0], 4).reshape(bits.shape)
    assert float(wrong.float().mean()) > 0.005


def _data(x, lay):
    """The codeword elements of a frame ``x [b, F, K, T]`` as ``[b, K, used_res]``."""
    r = torch.arange(lay.used_res)
    f = x.shape[1]
    return x[:, r % f, :, lay.pilot_slots + r // f].permute(1, 2, 0)     # advanced idx first


def test_same_seed_same_results_other_seed_other_results():
    sc = _sc(3.0, model="uma")

    def run(s):
        chain = CodedChain(s)
        blocks = {n: linksim.blocks.get(n, "detector", s) for n in ("lmmse", "kbest")}
        acc = chain.run_point(blocks, chain.point())
        return {(lb, m): (a.errors, a.n) for lb, ms in acc.items() for m, a in ms.items()}

    a, b = run(sc), run(sc)
    assert a == b and a[("lmmse", "bler")][0] > 0
    assert run(sc.replace(run={"seed": 7})) != a


def test_stopping_rule_counts_drops_as_detection_does():
    lo = _bler(_sc(-10.0, target_block_errors=5))
    assert lo["bler"].n == 8 * 2 * 2                            # min_samples drops, then stopped
    chain = CodedChain(_sc(-10.0, target_block_errors=5))
    assert chain.budget(chain.point()) == 16


def test_meta_default_device_gives_the_same_numbers():
    """Every tensor of the chain (Sionna's code pieces included) is made on the scenario's device."""
    sc = _sc(5.0)
    block = {"lmmse": linksim.blocks.get("lmmse", "detector", sc)}
    plain = CodedChain(sc).run_point(block, CodedChain(sc).point())
    chain = CodedChain(sc)
    torch.set_default_device("meta")
    try:
        strict = chain.run_point(block, chain.point())
    finally:
        torch.set_default_device(None)
    assert {m: (a.errors, a.n) for m, a in strict["lmmse"].items()} == \
           {m: (a.errors, a.n) for m, a in plain["lmmse"].items()}


@pytest.mark.parametrize("coded, match", [
    ({"pilot_slots": 6}, "coded.pilot_slots = 6"),
    ({"coded_block_bits": 242}, "coded.coded_block_bits = 242 is not a multiple"),
    ({"coded_block_bits": 4000}, "coded.coded_block_bits = 4000 does not fit"),
    ({"code_rate": 0.02}, "coded.code_rate"),
    ({"min_samples": 32, "max_samples": 16}, "coded.min_samples"),
])
def test_bad_keys_are_one_line_errors(coded, match):
    with pytest.raises(LinksimError, match=match) as e:
        CodedChain(_sc(**coded))
    assert "\n" not in str(e.value)


def test_bad_key_value_in_toml_is_named(tiny_toml):
    with pytest.raises(LinksimError, match="coded.demapping"):
        linksim.load_scenario(tiny_toml('[coded]\ndemapping = "exact"\n'))


def test_sweep_writes_bler_and_ber_rows(tiny_toml, tmp_path):
    path = tiny_toml("[coded]\nmin_samples = 8\nmax_samples = 16\ntarget_block_errors = 20\n",
                     model="rayleigh")
    st = sweep(path, "coded", ["lmmse", "kbest"], "snr_db=-10,30", tmp_path / "c", progress=False)
    rows = read_rows(st.csv)
    got = {(r["block"], float(r["x"]), r["metric"]): r for r in rows}
    assert len(rows) == 2 * 2 * 2 and {m for *_, m in got} == {"bler", "ber"}
    for r in rows:
        assert r["task"] == "coded" and float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"])
    c = CodedChain(linksim.load_scenario(path)).layout.codewords           # 48 x 5 x 4 bits / 480 = 2
    assert c == 2 and got[("lmmse", 30.0, "bler")]["n"] == str(16 * 2 * c)
    assert got[("lmmse", 30.0, "ber")]["n"] == str(16 * 2 * c * 240)
    for blk in ("lmmse", "kbest"):
        assert float(got[(blk, -10.0, "bler")]["value"]) > 0.9 > float(got[(blk, 30.0, "bler")]["value"])
