import numpy as np
import pytest
import torch
from scipy import stats

from ivkit.core.errors import ArtifactError, InputError
from ivkit.synthetic.bayes import mixture_predictions, ridge_predictions
from ivkit.synthetic.data import RegressionTask, discrete_set
from ivkit.synthetic.measure import (
    PromptLosses,
    bootstrap_interval,
    conjugate_sweep,
    eval_prompts,
    implied_prior,
    mean_interval,
    measure_losses,
    ratio_of_gains,
    weighted_mean,
)

TASK = RegressionTask(dim=2, n_points=8)


class RidgeNet(torch.nn.Module):
    """A "model" that is ridge regression: the conjugate must change nothing for it."""

    def forward(self, xs, ys):
        return ridge_predictions(xs, ys, noise=TASK.noise, tau=TASK.tau)


class MixtureNet(torch.nn.Module):
    """A "model" that is the Bayes mixture with discrete weight ``p``."""

    def __init__(self, p):
        super().__init__()
        self.p, self.table = p, discrete_set(TASK)

    def forward(self, xs, ys):
        return mixture_predictions(xs, ys, self.table, noise=TASK.noise, tau=TASK.tau, p_discrete=self.p)


def test_intervals():
    v = np.random.default_rng(0).normal(2.0, 3.0, size=200)
    m, lo, hi = mean_interval(v)
    half = stats.t.ppf(0.975, 199) * v.std(ddof=1) / np.sqrt(200)
    assert m == pytest.approx(v.mean()) and hi - m == pytest.approx(half) and m - lo == pytest.approx(half)
    point, blo, bhi = bootstrap_interval(weighted_mean, [v], seed=1)
    assert point == pytest.approx(v.mean()) and blo < point < bhi and (bhi - blo) == pytest.approx(hi - lo, rel=0.25)
    assert bootstrap_interval(weighted_mean, [v], seed=1) == (point, blo, bhi)
    # the vectorised draws are the loop over resamples: weights = how often each prompt is drawn
    w = np.random.default_rng(3).multinomial(200, np.full(200, 1 / 200), size=5).astype(float)
    loop = [np.repeat(v, w[i].astype(int)).mean() for i in range(5)]
    assert np.allclose(weighted_mean(w, v), loop)
    a, b, c = v + 1.0, v + 0.25, v
    assert ratio_of_gains(np.ones((1, 200)), a, b, c)[0] == pytest.approx(0.75)


def test_losses_conjugate_and_references(tmp_path):
    p = eval_prompts(TASK, 300, "continuous", "test")
    losses = measure_losses({"ridge-net": RidgeNet()}, p, TASK, alphas=(1.0, 2.5))
    # the conjugate is exact for a ridge "model", and it equals the ridge reference
    assert np.allclose(losses.errors["ridge-net"], losses.errors["ridge-net x2.5"], atol=1e-5)
    assert np.allclose(losses.errors["ridge-net"], losses.errors["ridge (continuous Bayes)"], atol=1e-9)
    assert np.allclose(losses.errors["zero predictor"], (p.ys ** 2).numpy(), atol=1e-9)
    assert losses.distance.shape == (300,) and (losses.distance >= 0).all()
    losses.save(tmp_path / "l.safetensors")
    back = PromptLosses.load(tmp_path / "l.safetensors")
    assert list(back.errors) == list(losses.errors) and all(np.array_equal(back.errors[k], losses.errors[k]) for k in back.errors)
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(ArtifactError, match="not a saved PromptLosses"):
        PromptLosses.load(tmp_path / "bad.safetensors")
    curves = losses.curves(["ridge-net", "zero predictor"])
    f = curves.to_pandas()
    assert len(f) == 2 * 8 and (f["lo"].iloc[1:] <= f["mse"].iloc[1:]).all()
    assert "LossCurves(300 prompts" in repr(curves)
    curves.plot()


def test_distance_profile_and_conjugate_sweep():
    val = measure_losses({"pretrained": RidgeNet(), "fine-tuned": MixtureNet(0.99)},
                         eval_prompts(TASK, 200, "continuous", "validation"), TASK, alphas=(1.0, 3.0), predictors=())
    test = measure_losses({"pretrained": RidgeNet(), "fine-tuned": MixtureNet(0.99)},
                          eval_prompts(TASK, 400, "continuous", "test"), TASK, alphas=(1.0, 3.0))
    prof = test.by_distance(conjugate="fine-tuned x3", examples=(1, 7), bins=4)
    f = prof.to_pandas()
    assert set(f["quantity"]) == {"fine-tuned - pretrained", "fine-tuned x3 - pretrained"}
    assert (f.groupby("quantity")["prompts"].sum() == 400).all()
    # ridge is the best predictor on continuous prompts: a discrete-leaning mixture can only lose on average
    assert (f[f["quantity"] == "fine-tuned - pretrained"]["mean"].mean()) > 0
    assert "near - far at matched ||w||" in repr(prof)
    prof.plot()
    sweep = conjugate_sweep(val, test, (1.0, 3.0), examples=(1, 7))
    assert sweep.chosen in (1.0, 3.0) and len(sweep.to_pandas()) == 4
    sweep.plot()
    assert "chosen alpha" in repr(sweep)
    with pytest.raises(InputError, match="alphas must include 1"):
        conjugate_sweep(val, test, (3.0,))
    with pytest.raises(InputError, match="no condition 'ft'"):
        test.window("ft", (1, 3))
    with pytest.raises(InputError, match="positions 0..7"):
        test.window("fine-tuned", (1, 9))


def test_implied_prior_recovers_a_known_weight():
    p = eval_prompts(TASK, 300, "mixture", "test")
    res = implied_prior({"a": MixtureNet(0.9), "b": MixtureNet(0.2)}, p, TASK, examples=(1, 7))
    assert res.best["a"][0] == 0.9 and res.best["b"][0] == 0.2
    assert res.best["a"][1] <= 0.9 <= res.best["a"][2]
    assert "ImpliedPrior(pretraining p=0.5" in repr(res)
    res.plot()


def test_bad_alphas():
    p = eval_prompts(TASK, 5, "continuous", "test")
    with pytest.raises(InputError, match="alphas must be non-zero"):
        measure_losses({"r": RidgeNet()}, p, TASK, alphas=(0.0,))
    with pytest.raises(InputError, match="split must be one of validation, test"):
        eval_prompts(TASK, 5, "continuous", "train")
