import math

import numpy as np
import pytest
import torch

from ivkit.core.errors import InputError
from ivkit.synthetic.bayes import (
    bayes_predictions,
    discrete_posterior,
    discrete_predictions,
    log_evidence,
    mixture_predictions,
    ridge_predictions,
)
from ivkit.synthetic.data import RegressionTask, discrete_set, sample_prompts


def _prompts(n=6, d=3, b=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=gen, dtype=torch.float64), torch.randn(b, n, generator=gen, dtype=torch.float64)


def test_ridge_with_one_example_is_the_closed_form():
    xs, ys = _prompts(n=2)
    noise, tau = 0.7, 1.3
    pred = ridge_predictions(xs, ys, noise=noise, tau=tau)
    x, q, y = xs[:, 0], xs[:, 1], ys[:, 0]
    # w_hat = x y / (x.x + sigma^2/tau^2), so the prediction at q is (x.q) y / (x.x + lambda)
    closed = (x * q).sum(-1) * y / ((x * x).sum(-1) + noise**2 / tau**2)
    assert torch.allclose(pred[:, 1], closed, atol=1e-12)
    assert (pred[:, 0] == 0).all()  # no examples: the prior mean


def test_ridge_matches_a_direct_solve_at_every_position():
    xs, ys = _prompts(n=7, d=3)
    pred = ridge_predictions(xs, ys, noise=1.0, tau=0.5)
    for i in range(7):
        for b in range(xs.shape[0]):
            X, y = xs[b, :i].numpy(), ys[b, :i].numpy()
            w = np.linalg.solve(X.T @ X + 4.0 * np.eye(3), X.T @ y)
            assert abs(pred[b, i].item() - xs[b, i].numpy() @ w) < 1e-10


@pytest.mark.parametrize("alpha", [0.5, 3.0, -2.0])
def test_the_conjugate_is_exact_for_ridge(alpha):
    xs, ys = _prompts(n=9, d=4)
    plain = ridge_predictions(xs, ys, noise=1.0, tau=1.0)
    conj = ridge_predictions(xs, alpha * ys, noise=1.0, tau=1.0) / alpha
    assert torch.allclose(conj, plain, atol=1e-12, rtol=0)


def test_the_conjugate_is_not_exact_for_the_discrete_posterior():
    xs, ys = _prompts(n=9, d=4)
    table = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = discrete_predictions(xs, ys, table, noise=1.0)
    conj = discrete_predictions(xs, 3 * ys, table, noise=1.0) / 3
    assert (conj - plain).abs().max() > 1e-2


def test_discrete_posterior_with_two_vectors_is_the_closed_form():
    xs, ys = _prompts(n=4, d=2)
    table = torch.tensor([[1.0, -0.5], [-0.3, 0.8]], dtype=torch.float64)
    noise = 0.8
    pred = discrete_predictions(xs, ys, table, noise=noise)
    for i in range(4):
        s = [((ys[:, :i] - xs[:, :i] @ w) ** 2).sum(-1) for w in table]
        p1 = 1 / (1 + torch.exp(-(s[1] - s[0]) / (2 * noise**2)))  # P(w_1 | data) with a uniform prior
        closed = p1 * (xs[:, i] @ table[0]) + (1 - p1) * (xs[:, i] @ table[1])
        assert torch.allclose(pred[:, i], closed, atol=1e-12)


def test_evidence_matches_the_dense_gaussian_and_the_mixture_combines_it():
    xs, ys = _prompts(n=5, d=3, b=3)
    table = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    noise, tau, p = 0.9, 1.2, 0.3
    log_d, log_c = log_evidence(xs, ys, table, noise=noise, tau=tau)
    for b in range(3):
        for i in range(1, 5):
            X, y = xs[b, :i], ys[b, :i]
            cov = noise**2 * torch.eye(i, dtype=torch.float64) + tau**2 * X @ X.T
            dense_c = torch.distributions.MultivariateNormal(torch.zeros(i, dtype=torch.float64), cov).log_prob(y)
            per = [torch.distributions.Normal(X @ w, noise).log_prob(y).sum() for w in table]
            dense_d = torch.logsumexp(torch.stack(per), 0) - math.log(4)
            assert abs(log_c[b, i] - dense_c) < 1e-9 and abs(log_d[b, i] - dense_d) < 1e-9
    post = discrete_posterior(xs, ys, table, noise=noise, tau=tau, p_discrete=p)
    assert torch.allclose(post[:, 0], torch.full((3,), p, dtype=torch.float64))
    mix = mixture_predictions(xs, ys, table, noise=noise, tau=tau, p_discrete=p)
    ridge = ridge_predictions(xs, ys, noise=noise, tau=tau)
    expect = post * discrete_predictions(xs, ys, table, noise=noise) + (1 - post) * ridge
    assert torch.allclose(mix, expect, atol=1e-12)
    ends = mixture_predictions(xs, ys, table, noise=noise, tau=tau, p_discrete=1.0)
    assert torch.allclose(ends, discrete_predictions(xs, ys, table, noise=noise))


def test_each_posterior_mean_is_best_on_its_own_prior():
    task = RegressionTask(dim=3, n_points=12)
    for prior, best in (("continuous", "ridge"), ("discrete", "discrete"), ("mixture", "mixture")):
        p = sample_prompts(task, 3000, prior, 5)
        mse = {k: ((bayes_predictions(p, task, k) - p.ys) ** 2)[:, 1:].mean().item()
               for k in ("zero", "ridge", "discrete", "mixture")}
        assert min(mse, key=mse.get) == best, (prior, mse)
        assert mse[best] < 0.6 * mse["zero"]
    assert discrete_set(task).shape == (64, 3)


def test_bad_input():
    with pytest.raises(InputError, match="predictor must be one of"):
        bayes_predictions(sample_prompts(RegressionTask(), 1, "continuous", 0), RegressionTask(), "lasso")
    with pytest.raises(InputError, match=r"xs must be \(batch, n, d\)"):
        ridge_predictions(torch.zeros(3, 2), torch.zeros(3), noise=1.0, tau=1.0)
