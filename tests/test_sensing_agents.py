"""Trained blocks of the sensing tasks: the modality features against numpy re-derivations, the
standardisation and the gate, and a small sensing agent trained and swept through the CLI (the
generic protocol tests in test_protocols.py cover every arch x sensing task besides)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from linksim.agents.models._modalities import ModalityEncoder, Standardize, features
from linksim.channel.modalities import beam_power
from linksim.cli import main


def _cn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


def _unpack(f, m):
    """The Hermitian R back from the first M^2 features (numpy, the inverse of the packing)."""
    f = np.asarray(f, dtype=np.float64)
    iu, ju = np.triu_indices(m, 0), np.triu_indices(m, 1)
    n = len(iu[0])
    r = np.zeros((m, m), complex)
    r[iu] = f[:n]
    r[ju] += 1j * f[n:m * m]
    return np.triu(r, 1) + np.triu(r, 1).conj().T + np.diag(np.diag(r).real)


def test_csi_features_are_the_covariance_and_the_delay_profile_in_numpy():
    m, f = 4, 8
    h = _cn(2, 3, m, f)
    feat = features("csi", h)
    assert feat.shape == (2, 3, m * m + f)
    x = h[1, 2].numpy().astype(complex)
    r = x @ x.conj().T / f
    r /= np.trace(r).real
    np.testing.assert_allclose(_unpack(feat[1, 2].numpy(), m), r, atol=1e-5)
    p = (np.abs(np.fft.ifft(x, axis=-1, norm="ortho")) ** 2).sum(0)
    np.testing.assert_allclose(feat[1, 2, m * m:].numpy(), p / p.sum(), atol=1e-6)


def test_a_beam_gain_is_linear_in_the_csi_features():
    """w^H R w, R rebuilt from the features, is the beam's gain of beam_power over the channel power."""
    m, f = 4, 6
    h = _cn(1, 1, m, f, seed=2)
    w = _cn(3, m, seed=3)
    w = w / w.abs().square().sum(-1, keepdim=True).sqrt()
    r = _unpack(features("csi", h)[0, 0].numpy(), m)
    # beam_power's gain is |w^T h|^2 (w as stored): R of h gives w^T R w^* for it
    mine = np.einsum("bm,mn,bn->b", w.numpy(), r, w.numpy().conj()).real
    total = h.abs().square().sum().item() / f
    np.testing.assert_allclose(mine, beam_power(h[0, 0], w).numpy() / total, rtol=1e-4)


def test_one_delay_tap_and_gnss_and_rsrp_features_in_closed_form():
    m, f, tap = 4, 8, 3
    h = (_cn(1, 1, m, 1) * torch.exp(-2j * math.pi * tap * torch.arange(f) / f)).to(torch.complex64)
    delay = features("csi", h)[0, 0, m * m:]
    assert delay.argmax() == tap and abs(float(delay[tap]) - 1.0) < 1e-5
    g = features("gnss", torch.tensor([[[30.0, 40.0]]]))[0, 0]
    torch.testing.assert_close(g, torch.tensor([30.0, 40.0, 50.0, math.log10(50.0)]))
    r = features("rsrp", torch.tensor([[[0.0, 10.0]]]))[0, 0]
    torch.testing.assert_close(r[-1], torch.tensor(10 * math.log10(5.5)))


def test_standardize_fits_once_in_training_and_inverts():
    s = Standardize(2)
    x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    s.eval()
    assert torch.equal(s(x), x)                          # not fitted: unchanged, nothing learned in eval
    s.train()
    y = s(x)
    torch.testing.assert_close(y, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    torch.testing.assert_close(s.inverse(y), x)
    s(x * 5)                                            # the first batch only
    torch.testing.assert_close(s.mean, torch.tensor([2.0, 20.0]))


def test_modality_gate_weights_sum_to_one_per_user():
    torch.manual_seed(0)
    enc = ModalityEncoder(("csi", "gnss", "rsrp"), 4, 8, width=16, hidden=16, fusion="gate")
    obs = {"csi": _cn(2, 3, 4, 8), "gnss": 100 * torch.randn(2, 3, 2), "rsrp": -90 + torch.randn(2, 3, 4)}
    z = enc(obs)
    assert z.shape == (2, 3, 16) and enc.last_gate.shape == (2, 3, 3)
    torch.testing.assert_close(enc.last_gate.sum(-1), torch.ones(2, 3))
    e = enc.embed(obs)
    torch.testing.assert_close(z, (enc.last_gate[..., None] * e).sum(-2))


@pytest.fixture(scope="module")
def los_agent(tmp_path_factory):
    """A small sensing agent (csi + gnss) trained for a few steps on the tiny scenario's LOS task."""
    root = tmp_path_factory.mktemp("sense")
    sc = root / "tiny.toml"
    sc.write_text('name = "tiny"\n[channel]\nbs_rows = 2\nbs_cols = 4\n[run]\nbatch_size = 8\n'
                  '[los]\nnum_samples = 16\nmodalities = "csi,gnss"\n')
    d = root / "sensenet"
    d.mkdir()
    (d / "agent.toml").write_text(f'[agent]\narch = "sensenet"\ntasks = ["los"]\nscenario = "{sc}"\n'
                                  '[model]\ninputs = ["csi", "gnss"]\nfusion = "gate"\nwidth = 32\nhidden = 32\n'
                                  '[train]\nsteps = 20\nbatch_size = 8\nval_drops = 8\nval_every = 10\n'
                                  'checkpoint_every = 10\n')
    assert main(["train", str(d), "--quiet"]) == 0
    return root, sc, d


def test_a_trained_sensing_agent_sweeps_beside_the_classical_block(los_agent, tmp_path):
    root, sc, d = los_agent
    out = tmp_path / "o"
    assert main(["sweep", str(sc), "--task", "los", "--blocks", f"kfactor,agent:{d}", "--over", "snr_db=0,20",
                 "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["block"] for r in rows} == {"kfactor", "sensenet"}
    acc = [float(r["value"]) for r in rows if r["metric"] == "accuracy"]
    assert len(acc) == 4 and all(0 <= a <= 1 for a in acc)


def test_an_agent_reading_a_modality_the_table_lacks_is_refused(los_agent, tmp_path, capsys):
    root, sc, d = los_agent
    bare = tmp_path / "bare.toml"
    bare.write_text(sc.read_text().replace('modalities = "csi,gnss"', 'modalities = "csi"'))
    code = main(["sweep", str(bare), "--task", "los", "--blocks", f"agent:{d}", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "reads modality gnss" in err[0] and "[los] modalities = 'csi'" in err[0]


def test_contrastive_pretraining_pairs_a_users_modalities_then_freezes_them():
    """InfoNCE between CSI and GNSS of the same users falls well below chance (log N); afterwards
    the encoders take no gradient and the adapters (identity at the start) do."""
    from linksim.channel.modalities import observed_drops
    from conftest import tiny
    obs, _ = observed_drops(tiny(), 16, seed=3, num_users=4, history=1, snr_db=20.0, gnss_std_m=1.0)
    torch.manual_seed(0)
    m, f = obs["csi"].shape[-2:]
    enc = ModalityEncoder(("csi", "gnss"), m, f, width=32, hidden=64, encoders="contrastive").train()
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = enc.contrastive_loss(obs)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    n = 16 * 4
    assert abs(first - math.log(n)) < 1.0 and loss.item() < 0.5 * math.log(n), (first, loss.item())
    opt.zero_grad()
    enc(obs).square().sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in enc.mlps.parameters())
    assert all(p.grad is not None and p.grad.any() for p in enc.adapters.parameters())


def test_a_zeroed_modality_reaches_blocks_as_zeros_and_enters_the_hash_only_when_set():
    from conftest import tiny
    from linksim.chains import chain_class
    sc = tiny(position={"num_samples": 4, "modalities": "csi,gnss,rsrp"})
    assert sc.replace(position={"zeroed": ""}).hash == sc.hash
    z = sc.replace(position={"zeroed": "gnss"})
    assert z.hash != sc.hash

    def first(s):
        chain = chain_class("position")(s)
        return next(iter(chain.batches(chain.point())))
    a, b = first(sc), first(z)
    assert a["gnss"].abs().min() > 0 and not b["gnss"].any()
    assert torch.equal(a["csi"], b["csi"]) and torch.equal(a["rsrp"], b["rsrp"])


def test_training_logs_the_modality_gate_weights_at_each_validation(los_agent):
    _, _, d = los_agent
    rows = list(csv.DictReader(open(d / "train_log.csv")))
    gates = {}
    for r in rows:
        if r["metric"] in ("val_gate_csi", "val_gate_gnss"):
            gates.setdefault(r["step"], {})[r["metric"]] = float(r["value"])
    assert set(gates) == {"0", "10", "20"}
    for g in gates.values():
        assert len(g) == 2 and abs(sum(g.values()) - 1) < 1e-5 and all(0 < v < 1 for v in g.values())
