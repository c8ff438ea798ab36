import pytest
import torch

from ivkit.core.arch import ARCHITECTURES
from ivkit.core.errors import InputError
from ivkit.models.hooks import add_to_residual, record_head_outputs
from ivkit.synthetic.data import RegressionTask, sample_prompts
from ivkit.synthetic.model import ModelConfig, RegressionGPT2, hookable


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return RegressionGPT2(ModelConfig(dim=3, n_points=6, n_embd=16, n_layer=2, n_head=2), seed=1).eval()


def test_predictions_read_only_the_past(net):
    p = sample_prompts(RegressionTask(dim=3, n_points=6), 4, "mixture", 0)
    with torch.no_grad():
        full = net(p.xs, p.ys)
        assert full.shape == (4, 6)
        # the prediction at i ignores y_i and everything after x_i
        ys2, xs2 = p.ys.clone(), p.xs.clone()
        ys2[:, 3:] += 5.0
        xs2[:, 4:] -= 2.0
        again = net(xs2, ys2)
        assert torch.allclose(again[:, :4], full[:, :4], atol=1e-6)
        assert not torch.allclose(again[:, 4:], full[:, 4:], atol=1e-3)
        # a shorter prompt gives the same early predictions
        assert torch.allclose(net(p.xs[:, :3], p.ys[:, :3]), full[:, :3], atol=1e-6)


def test_each_position_holds_the_previous_example_and_the_current_input(net):
    p = sample_prompts(RegressionTask(dim=3, n_points=6), 2, "mixture", 3)
    tok = net.embed(p.xs, p.ys)
    assert tok.shape == (2, 6, 7)
    assert torch.equal(tok[:, 0, :4], torch.zeros(2, 4))  # no example before the first input
    for i in range(1, 6):
        assert torch.equal(tok[:, i, :3], p.xs[:, i - 1]) and torch.equal(tok[:, i, 3], p.ys[:, i - 1])
    assert torch.equal(tok[:, :, 4:], p.xs)


def test_same_seed_same_weights():
    cfg = ModelConfig(dim=2, n_points=3, n_embd=8, n_layer=1, n_head=2)
    a, b, c = RegressionGPT2(cfg, seed=3), RegressionGPT2(cfg, seed=3), RegressionGPT2(cfg, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_ivkit_hooks_attach_through_the_architecture_table(net):
    view = hookable(net)
    assert view.spec == ARCHITECTURES["gpt2"]
    assert (view.geometry.n_layers, view.geometry.n_heads, view.geometry.d_head) == (2, 2, 8)
    p = sample_prompts(RegressionTask(dim=3, n_points=6), 3, "continuous", 1)
    with torch.no_grad(), record_head_outputs(view) as rec:
        net(p.xs, p.ys)
    assert rec.stack().shape == (3, 2, 2, 8)
    with torch.no_grad():
        plain = net(p.xs, p.ys)
        with add_to_residual(view, 0, torch.randn(16, generator=torch.Generator().manual_seed(0)), scale=3.0):
            moved = net(p.xs, p.ys)
    assert torch.allclose(moved[:, :-1], plain[:, :-1], atol=1e-6)  # position -1 only: the query
    assert (moved[:, -1] - plain[:, -1]).abs().min() > 1e-4


def test_bad_input(net):
    with pytest.raises(InputError, match="dimension 4 but the model reads 3"):
        net(torch.zeros(1, 2, 4), torch.zeros(1, 2))
    with pytest.raises(InputError, match="the model reads 1 to 6"):
        net(torch.zeros(1, 7, 3), torch.zeros(1, 7))
    with pytest.raises(InputError, match="multiple of n_head"):
        ModelConfig(n_embd=10, n_head=4)
