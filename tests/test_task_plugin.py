"""A task is one registered unit: a toy task defined only here ("estimate each user's channel gain
from a noisy snapshot") runs through ``linksim list``, a sweep, ``linksim train`` of a tiny agent
and its validation, without a line under ``linksim/`` naming it.

The task, its block kind, a classical block, a scenario table and an agent architecture are
registered by the fixture and removed afterwards, so the other tests never see them.
"""
import csv
import math
from dataclasses import dataclass

import pytest
import torch

import linksim
from linksim import registry
from linksim.agents import AgentModel
from linksim.blocks import Block
from linksim.chains import Chain
from linksim.chains.base import complex_noise, finite, uniform
from linksim.cli import main
from linksim.metrics import NMSE
from linksim.scenario import SECTIONS, register_section, setting


@dataclass
class Gain:
    """``[gain]``: users, observation SNR and drops of the toy task."""

    num_users: int = setting(2, lambda v: v > 0, "must be > 0")
    snr_db: float = setting(10.0)
    num_samples: int = setting(16, lambda v: v > 0, "must be > 0")


def gain_of(h):
    """Each user's gain: mean ``|h|^2`` over antennas and subcarriers, ``[b, K, M, F] -> [b, K]``."""
    return h.abs().square().mean((-2, -1))


def gain_batch(h, noise_var, gen):
    obs = h + complex_noise(h.shape, noise_var, gen, h.dtype)
    return {"obs": obs, "noise_var": noise_var, "gain": gain_of(h), "drops": h.shape[0]}


class GainChain(Chain):
    """Toy task: estimate each user's channel gain from a noisy snapshot of its channel."""

    section = "gain"
    x_names = ("snr_db", "num_users")
    default_x = "snr_db"
    must_match = ("num_bs_antennas",)
    references = ("gain_unbiased",)
    val_metric = "nmse_db"
    loss_weight = 1.0
    prompt = ("[gain estimation]", "A base station with {antennas} antennas hears {users} users.",
              "Estimate each user's channel gain.")

    def batches(self, point):
        cfg, batch = point.scenario.gain, point.scenario.run.batch_size
        for i in range(math.ceil(cfg.num_samples / batch)):
            b = min(batch, cfg.num_samples - i * batch)
            h = self.channels(point, i, b, cfg.num_users, 1)[:, 0]
            yield gain_batch(h, 10 ** (-cfg.snr_db / 10), self.noise_generator(point, i))

    @staticmethod
    def new_metrics(block=None):
        return {"nmse_db": NMSE()}

    @staticmethod
    def measure(block, batch, acc):
        g_hat = finite(block(batch["obs"], batch["noise_var"])).to(batch["gain"].dtype)
        acc["nmse_db"].update((g_hat - batch["gain"]).square().sum(1), batch["gain"].square().sum(1))

    def train_samples(self, pool, layout, seed):
        return pool[:, 0].contiguous()

    def train_batch(self, samples, size, gen, train, stage, users=None):
        s = samples[torch.randint(0, len(samples), (size,), generator=gen)]
        return gain_batch(s, 10 ** (-uniform(train.snr_db, size, gen) / 10), gen)

    def val_batches(self, pool, samples, size, seed, train, max_batches):
        return list(self.batches(self.point()))


class UnbiasedGain(Block):
    """Unbiased gain estimate: mean ``|y|^2`` minus the noise variance."""

    def forward(self, obs, noise_var):
        nv = torch.as_tensor(noise_var, dtype=self.dtype, device=self.device)
        nv = nv.reshape(-1, 1) if nv.dim() else nv
        return gain_of(self.cast(obs)).to(self.dtype) - nv


class GainMLP(AgentModel):
    """Toy trained gain estimator: an MLP on (mean |y|^2, noise variance) per user."""

    def __init__(self, dims, hidden: int = 16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, obs, noise_var):
        p = gain_of(obs.to(torch.complex64))
        nv = torch.as_tensor(noise_var, dtype=p.dtype, device=p.device)
        nv = (nv.reshape(-1, 1) if nv.dim() else nv).expand_as(p)
        return p + self.net(torch.stack([p, nv], -1)).squeeze(-1)

    def training_loss(self, batch):
        return (self(batch["obs"], batch["noise_var"]) - batch["gain"]).square().mean()


@pytest.fixture
def toy_task():
    registry.register_kind("gain_estimator", "(obs [b,K,M,F], noise_var) -> gain [b,K]")
    register_section("gain")(Gain)
    registry.register_task("gain", "gain_estimator")(GainChain)
    registry.register_block("gain_unbiased", "gain_estimator")(UnbiasedGain)
    registry.register_arch("gain_mlp", tasks=("gain",))(GainMLP)
    try:
        yield
    finally:
        registry.ARCHS.pop("gain_mlp")
        registry.BLOCKS.pop("gain_unbiased")
        registry.TASKS.pop("gain")
        registry.KINDS.pop("gain_estimator")
        SECTIONS.pop("gain")


SCENARIO = """name = "toy"
[channel]
bs_rows = 2
bs_cols = 2
[gain]
num_users = 2
num_samples = 16
[run]
batch_size = 8
"""


def test_a_task_defined_outside_linksim_runs_through_list_sweep_train_and_validation(toy_task, tmp_path, capsys):
    sc_file = tmp_path / "toy.toml"
    sc_file.write_text(SCENARIO)
    assert linksim.load_scenario(sc_file).gain.num_users == 2
    # the scenario hash of every other scenario is unchanged by the new table (it is at its defaults)
    assert linksim.load_scenario("scenarios/quick.toml").hash == "957882ac2051063b"
    agent = tmp_path / "gain-agent"
    agent.mkdir()
    (agent / "agent.toml").write_text(f"""[agent]
arch = "gain_mlp"
scenario = "{sc_file}"
[train]
steps = 60
batch_size = 64
lr = 0.01
pool_drops = 16
val_drops = 8
snr_db = [0.0, 10.0]
val_every = 30
checkpoint_every = 30
""")

    assert main(["list", "--agents", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert "gain_estimators:" in listed and "gain_unbiased" in listed
    assert "gain         [gain_estimators]" in listed and "gain_mlp" in listed

    assert main(["train", str(agent), "--quiet"]) == 0
    spec = linksim.agents.read_agent(agent)
    assert spec.result["task"] == "gain" and spec.result["dims"]["num_users"] == 2
    assert "val_nmse_db" in spec.result and "val_nmse_db_gain_unbiased" in spec.result   # validation
    with open(agent / "train_log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]
    assert sum(losses[-10:]) < sum(losses[:10])

    out = tmp_path / "sweep"
    assert main(["sweep", str(sc_file), "--task", "gain", "--blocks", f"gain_unbiased,agent:{agent}",
                 "--over", "snr_db=0,20", "--out", str(out), "--quiet"]) == 0
    rows = linksim.results.read_rows(out / "results.csv")
    got = {(r["block"], float(r["x"])): float(r["value"]) for r in rows}
    assert set(got) == {(b, x) for b in ("gain_unbiased", "gain-agent") for x in (0.0, 20.0)}
    # the unbiased estimate's error shrinks with the SNR (its variance falls as the noise does)
    assert got[("gain_unbiased", 20.0)] < got[("gain_unbiased", 0.0)] - 10

    from linksim.llm.prompt import instruction
    assert instruction("gain", linksim.load_scenario(sc_file)).startswith("[gain estimation] A base station with 4")
