"""Symbol-level losses for trained detectors: the constellation cross-entropy's gradient against a
finite difference, its value against a direct numpy evaluation, and the DNN's classifier recipe."""
import numpy as np
import torch

from linksim.agents import Dims, build_model
from linksim.agents.models._detection import symbol_ce
from linksim.blocks.qam import constellation_points, random_symbols
from linksim.chains.detection import detection_batch


def _estimates(seed=0, scale=0.4):
    g = torch.Generator().manual_seed(seed)
    idx, x = random_symbols((3, 2, 4), 4, g, dtype=torch.complex128)
    noise = torch.complex(torch.randn(x.shape, generator=g, dtype=torch.float64),
                          torch.randn(x.shape, generator=g, dtype=torch.float64))
    return idx, x + scale * noise


def test_symbol_ce_equals_a_numpy_evaluation():
    idx, x_hat = _estimates()
    c = constellation_points(4, "cpu", torch.complex128).numpy()
    xh, ii = x_hat.numpy().reshape(-1), idx.numpy().reshape(-1)
    tau = 0.3
    ref = np.mean([np.log(np.exp(-np.abs(v - c) ** 2 / tau).sum()) + np.abs(v - c[i]) ** 2 / tau
                   for v, i in zip(xh, ii)])
    assert abs(float(symbol_ce(x_hat, idx, 4, tau)) - ref) < 1e-5


def test_symbol_ce_gradient_matches_a_finite_difference():
    idx, x_hat = _estimates(1)
    z = torch.view_as_real(x_hat).clone().requires_grad_(True)

    def loss(zz):
        return symbol_ce(torch.view_as_complex(zz), idx, 4, 0.25).double()

    loss(z).backward()
    eps = 1e-6
    fd = torch.zeros_like(z)
    flat, fd_flat = z.detach().reshape(-1), fd.reshape(-1)
    for j in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[j] += eps
        minus[j] -= eps
        fd_flat[j] = (loss(plus.view_as(z)) - loss(minus.view_as(z))) / (2 * eps)
    assert torch.allclose(z.grad, fd, atol=1e-5, rtol=1e-4)


def test_dnn_classifier_on_sufficient_statistics_learns_and_outputs_posterior_means():
    dims = Dims(num_bs_antennas=8, num_users=2, num_subcarriers=1, history=1, horizon=1,
                bits_per_symbol=4, symbols_per_sample=3)
    torch.manual_seed(0)
    model = build_model("dnn", dims, {"hidden": [64, 64], "features": "gram", "loss": "ce"})
    g = torch.Generator().manual_seed(2)
    h = torch.complex(torch.randn(64, 8, 2, generator=g), torch.randn(64, 8, 2, generator=g)) / 2 ** 0.5
    batch = detection_batch(h, 0.05, 3, 4, g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    x_hat = model(batch["y"], batch["h"], batch["noise_var"])
    c = constellation_points(4, "cpu")
    assert x_hat.shape == (64, 2, 3) and float(x_hat.abs().max()) <= float(c.abs().max()) + 1e-5
