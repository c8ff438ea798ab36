import pytest
import torch

from ivkit.core.errors import InputError
from ivkit.synthetic.data import RegressionTask, discrete_set, distance_to_discrete, sample_prompts


def test_same_seed_same_prompts_other_seed_other_prompts():
    task = RegressionTask(dim=3, n_points=5)
    a, b = sample_prompts(task, 8, "mixture", 7), sample_prompts(task, 8, "mixture", 7)
    c = sample_prompts(task, 8, "mixture", 8)
    for name in ("xs", "ys", "ws", "from_discrete", "index"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.xs, c.xs)
    assert torch.equal(discrete_set(task), discrete_set(RegressionTask(dim=3, n_points=9)))
    assert not torch.equal(discrete_set(task), discrete_set(RegressionTask(dim=3, discrete_seed=1)))


def test_continuous_prior_has_the_stated_moments():
    task = RegressionTask(dim=3, n_points=4, noise=0.5, tau=1.5)
    p = sample_prompts(task, 20000, "continuous", 0)
    n = len(p)
    assert not p.from_discrete.any() and (p.index == -1).all()
    # w ~ N(0, tau^2 I): mean within 4 standard errors, covariance entries within 4 of theirs
    assert p.ws.mean(0).abs().max() < 4 * task.tau / n**0.5
    cov = torch.cov(p.ws.T)
    assert (cov - task.tau**2 * torch.eye(3)).abs().max() < 4 * task.tau**2 * (2 / n) ** 0.5
    x = p.xs.reshape(-1, 3)
    assert (torch.cov(x.T) - torch.eye(3)).abs().max() < 4 * (2 / len(x)) ** 0.5
    eps = p.ys - torch.einsum("bnd,bd->bn", p.xs, p.ws)
    assert abs(eps.var().item() - task.noise**2) < 4 * task.noise**2 * (2 / eps.numel()) ** 0.5
    assert abs(eps.mean().item()) < 4 * task.noise / eps.numel() ** 0.5


def test_discrete_prior_draws_uniformly_from_the_fixed_set():
    task = RegressionTask(dim=4, n_points=3, n_discrete=16, tau=2.0)
    table = discrete_set(task)
    assert table.shape == (16, 4)
    # the set itself was drawn from N(0, tau^2 I): 64 numbers, loose 4-sigma bounds
    assert abs(table.mean().item()) < 4 * task.tau / table.numel() ** 0.5
    assert abs(table.var().item() / task.tau**2 - 1) < 4 * (2 / table.numel()) ** 0.5
    p = sample_prompts(task, 8000, "discrete", 3)
    assert p.from_discrete.all()
    assert torch.equal(p.ws, table[p.index])
    counts = torch.bincount(p.index, minlength=16).double()
    expected = 8000 / 16
    assert ((counts - expected).abs() < 5 * (expected * (1 - 1 / 16)) ** 0.5).all()
    assert distance_to_discrete(p.ws, task).abs().max() < 1e-5


def test_mixture_weight_and_active_dims():
    task = RegressionTask(dim=4, n_points=6, p_discrete=0.3)
    p = sample_prompts(task, 10000, "mixture", 1)
    frac = p.from_discrete.double().mean().item()
    assert abs(frac - 0.3) < 4 * (0.3 * 0.7 / 10000) ** 0.5
    masked = sample_prompts(task, 50, "mixture", 1, active_dims=2)
    full = sample_prompts(task, 50, "mixture", 1)
    assert (masked.xs[..., 2:] == 0).all() and (masked.ws[:, 2:] == 0).all()
    assert torch.equal(masked.xs[..., :2], full.xs[..., :2])
    eps = full.ys - torch.einsum("bnd,bd->bn", full.xs, full.ws)
    assert torch.allclose(masked.ys, torch.einsum("bnd,bd->bn", masked.xs, masked.ws) + eps, atol=1e-5)


def test_scaled_and_head():
    p = sample_prompts(RegressionTask(dim=2, n_points=5), 4, "continuous", 0)
    s = p.scaled(3.0)
    assert torch.allclose(s.ys, 3 * p.ys) and torch.equal(s.xs, p.xs)
    assert p.head(2).xs.shape == (4, 2, 2)
    with pytest.raises(InputError, match="alpha"):
        p.scaled(0.0)
    with pytest.raises(InputError, match="n_points=9"):
        p.head(9)


@pytest.mark.parametrize("kwargs, match", [
    ({"dim": 0}, "dim must be at least 1"),
    ({"noise": -1.0}, "noise is a standard deviation"),
    ({"tau": float("nan")}, "tau must be finite"),
    ({"p_discrete": 1.5}, "p_discrete is a probability"),
])
def test_bad_task_settings_fail_early(kwargs, match):
    with pytest.raises(InputError, match=match):
        RegressionTask(**kwargs)


def test_bad_prior_names_the_choices():
    with pytest.raises(InputError, match="prior must be one of discrete, continuous, mixture"):
        sample_prompts(RegressionTask(), 2, "gaussian", 0)
