import pytest
import torch

from linksim.scenario import from_dict

# One intra-op thread: the tensors in tests are small, and on a shared 2-core machine a second
# OpenMP thread that is descheduled makes every op wait at a barrier (measured: up to ~2 s per
# recurrent backward step with 2 threads under load, ~20 ms with 1).
torch.set_num_threads(1)


def tiny(**sections):
    """A small scenario dict -> Scenario (sections override the defaults)."""
    base = {"name": "tiny", "channel": {"bs_rows": 2, "bs_cols": 4, "speed_kmh": 30.0},
            "prediction": {"num_samples": 16, "num_users": 2},
            "precoding": {"num_samples": 16, "num_users": 2},
            "detection": {"num_users": 2, "min_samples": 8, "max_samples": 16, "target_errors": 50},
            "run": {"batch_size": 8}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return from_dict(base, "<tiny>")


@pytest.fixture
def tiny_scenario():
    return tiny


@pytest.fixture
def tiny_toml(tmp_path):
    """Write a tiny scenario to a TOML file and return its path."""
    def write(extra: str = "", model: str = "uma") -> str:
        p = tmp_path / "tiny.toml"
        p.write_text(f"""name = "tiny"
[channel]
model = "{model}"
bs_rows = 2
bs_cols = 4
[prediction]
num_users = 2
num_samples = 16
[precoding]
num_users = 2
num_samples = 16
[detection]
num_users = 2
min_samples = 8
max_samples = 16
target_errors = 50
[run]
batch_size = 8
{extra}""")
        return str(p)
    return write
