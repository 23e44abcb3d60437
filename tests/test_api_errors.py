"""The Python API names a bad value in one line (LinksimError) instead of a linear-algebra
traceback or a silently wrong output."""
import pytest
import torch

from linksim.agents.base import Dims, build_model
from linksim.blocks import get
from linksim.errors import LinksimError

H = torch.randn(4, 2, 8, dtype=torch.complex64)      # [b, K, M]


@pytest.mark.parametrize("name", ["wmmse", "wmmse_best", "dpc_bound"])
@pytest.mark.parametrize("p_tx, noise_var, named", [
    (1.0, 0.0, "noise_var must be finite and > 0, got 0"),
    (-1.0, 0.1, "p_tx must be finite and > 0, got -1"),
    (1.0, float("nan"), "noise_var must be finite and > 0, got nan"),
    (torch.tensor([1.0, 1.0, 0.0, 1.0]), 0.1, "p_tx must be finite and > 0, got 0"),
])
def test_precoders_refuse_non_positive_power_or_noise(name, p_tx, noise_var, named):
    with pytest.raises(LinksimError, match=f"^{name}: {named}$"):
        get(name)(H, p_tx, noise_var)


def test_agent_size_error_names_only_the_fixed_sizes():
    dims = Dims(num_bs_antennas=8, num_users=2, num_subcarriers=12, history=6, horizon=2,
                bits_per_symbol=4, symbols_per_sample=6)
    model = build_model("oampnet", dims, {"num_layers": 2})           # any M, K fixed
    y, h = torch.zeros(1, 8, 6, dtype=torch.complex64), torch.zeros(1, 8, 3, dtype=torch.complex64)
    with pytest.raises(LinksimError) as e:
        model.task_forward("detection", y, h, 0.1)
    assert str(e.value) == "oampnet: built for K=2, got h (1, 8, 3) (M=8, K=3)"
