import math

import numpy as np
import pytest
import torch

from ivkit.core.errors import InputError
from ivkit.synthetic.data import RegressionTask, sample_prompts
from ivkit.synthetic.heads import (
    compare_rankings,
    patch_from_pretrained,
    patched_query_predictions,
    query_head_outputs,
    rank_heads,
)
from ivkit.synthetic.model import ModelConfig, RegressionGPT2

TASK = RegressionTask(dim=3, n_points=7)
CFG = ModelConfig(dim=3, n_points=7, n_embd=16, n_layer=2, n_head=2)


def _net(seed):
    net = RegressionGPT2(CFG, seed=seed).eval()
    with torch.no_grad():  # larger weights than GPT-2's 0.02 init, so that heads matter
        for p in net.transformer.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + p.numel()))
    return net


@torch.no_grad()
def slow_forward(net, xs, ys, patch=None):
    """The network by hand, one head at a time: ``patch = {(layer, head): (batch, d_head)}`` replaces
    those heads' outputs at the last position."""
    patch = patch or {}
    h = net.read_in(net.embed(xs, ys))
    t = h.shape[1]
    h = h + net.transformer.wpe(torch.arange(t))
    n_head = net.config.n_head
    dh = net.config.n_embd // n_head
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    outs = {}
    for layer, block in enumerate(net.transformer.h):
        a = block.ln_1(h)
        qkv = a @ block.attn.c_attn.weight + block.attn.c_attn.bias
        q, k, v = qkv.split(net.config.n_embd, dim=-1)
        heads = []
        for hd in range(n_head):
            sl = slice(hd * dh, (hd + 1) * dh)
            scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dh)
            z = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ v[..., sl]
            if (layer, hd) in patch:
                z[:, -1] = patch[(layer, hd)]
            outs[(layer, hd)] = z[:, -1].clone()
            heads.append(z)
        h = h + torch.cat(heads, dim=-1) @ block.attn.c_proj.weight + block.attn.c_proj.bias
        h = h + block.mlp(block.ln_2(h))
    return net.read_out(net.transformer.ln_f(h)).squeeze(-1), outs


def test_recorded_head_outputs_match_the_slow_path():
    net = _net(0)
    p = sample_prompts(TASK, 5, "mixture", 0)
    z = query_head_outputs(net, p, 4)  # query after 4 examples: the first 5 pairs
    pred, outs = slow_forward(net, p.xs[:, :5], p.ys[:, :5])
    assert torch.allclose(net(p.xs[:, :5], p.ys[:, :5]), pred, atol=1e-5)
    for (l, h), v in outs.items():
        assert torch.allclose(z[:, l, h], v, atol=1e-5)


def test_patching_matches_the_slow_path():
    net = _net(1)
    p = sample_prompts(TASK, 6, "continuous", 1)
    n = 3
    values = torch.randn(6, 2, 2, 8, generator=torch.Generator().manual_seed(0))
    for heads in ([(0, 1)], [(1, 0)], [(0, 0), (1, 1)]):
        fast = patched_query_predictions(net, p, n, heads, values)
        slow, _ = slow_forward(net, p.xs[:, :n + 1], p.ys[:, :n + 1], {(l, h): values[:, l, h] for l, h in heads})
        plain, _ = slow_forward(net, p.xs[:, :n + 1], p.ys[:, :n + 1])
        assert torch.allclose(fast, slow[:, -1], atol=1e-5)
        assert (fast - plain[:, -1]).abs().max() > 1e-3  # the patch did something
    # one value for every prompt broadcasts
    shared = patched_query_predictions(net, p, n, [(1, 1)], values[0])
    slow, _ = slow_forward(net, p.xs[:, :n + 1], p.ys[:, :n + 1], {(1, 1): values[0, 1, 1].expand(6, 8)})
    assert torch.allclose(shared, slow[:, -1], atol=1e-5)


def test_rank_heads_is_zero_when_the_source_is_the_run_itself():
    net = _net(2)
    d = sample_prompts(TASK, 40, "discrete", 2)
    r = rank_heads(net, d, d, TASK, examples=(2, 5), source="paired", model="tiny")
    assert r.scores.shape == (2, 2) and np.allclose(r.scores, 0.0, atol=1e-6)
    c = sample_prompts(TASK, 40, "continuous", 3)
    r2 = rank_heads(net, d, c, TASK, examples=(2, 5), model="tiny")
    assert np.abs(r2.scores).max() > 1e-3
    assert (r2.intervals[..., 0] <= r2.scores + 1e-12).all() and (r2.scores <= r2.intervals[..., 1] + 1e-12).all()
    frame = r2.to_pandas()
    assert sorted(frame["rank"]) == [1, 2, 3, 4] and "HeadRanking(tiny" in repr(r2)
    change = compare_rankings(r2, r2, k=2)
    assert change.spearman == pytest.approx(1.0) and change.top_overlap == 1.0
    r2.plot()
    change.plot()


def test_patch_from_pretrained():
    pre, ft = _net(3), _net(4)
    c = sample_prompts(TASK, 30, "continuous", 4)
    rec = patch_from_pretrained(pre, ft, c, [(0, 0)], examples=(2, 4), random_draws=2)
    f = rec.to_pandas().set_index("condition")
    # every head from the pretrained model at the query: the query's prediction is the pretrained one only
    # if the MLPs and earlier positions agree, which they do not; but a self-patch must change nothing
    same = patch_from_pretrained(ft, ft, c, [(0, 0), (1, 1)], examples=(2, 4), random_draws=1).to_pandas().set_index("condition")
    assert np.allclose(same["mse"], same.loc["fine-tuned", "mse"], atol=1e-6)
    assert f.loc["fine-tuned", "mse"] != pytest.approx(f.loc["pretrained", "mse"])
    assert "fine-tuned + pretrained 1 random heads" in f.index
    rec.plot()
    assert "HeadRecovery(heads ['L0H0']" in repr(rec)


def test_bad_input():
    net = _net(5)
    p = sample_prompts(TASK, 4, "continuous", 5)
    with pytest.raises(InputError, match=r"head \(2, 0\) does not exist"):
        patched_query_predictions(net, p, 2, [(2, 0)], torch.zeros(2, 2, 8))
    with pytest.raises(InputError, match="at most 6 examples"):
        rank_heads(net, p, p, TASK, examples=(7,))
    with pytest.raises(InputError, match="source must be one of mean, paired"):
        rank_heads(net, p, p, TASK, source="median")
