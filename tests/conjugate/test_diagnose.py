"""The IV diagnosis on tiny models: it runs end to end, its alignment is the mean cosine computed
directly from block outputs, and the KV-cached engine gives generate_ids' tokens."""

import sys

import numpy as np
import pytest
import torch

from ivkit import InstructionVector
from ivkit.activations import head_activations, residual_alignment
from ivkit.conjugate.diagnose import alignment, diagnose, encoded, t_interval
from ivkit.conjugate.probe import build_probe, engine_agreement
from ivkit.conjugate.transforms import identity, leetspeak, pig_latin
from ivkit.core.errors import InputError


@pytest.fixture(scope="module")
def items():
    return build_probe(["repeat"], n=6, seed=0)


@pytest.fixture(scope="module")
def iv(tiny_llama, items):
    enc = encoded(tiny_llama, items, identity())
    means = head_activations(tiny_llama, enc, progress=False).mean(0)
    return InstructionVector.build(tiny_llama, means, heads=[(0, 1), (1, 2), (2, 0)], layer=1, scale=3.0, task="repeat")


@torch.no_grad()
def _states(model, texts):
    """The slow path: one prompt at a time, last-token block outputs caught by plain forward hooks:
    ``(n, n_layers, d_model)``, float64."""
    layers = model.model.model.layers
    out = []
    for text in texts:
        caught = {}
        hooks = [blk.register_forward_hook(lambda m, i, o, l=l: caught.__setitem__(l, o[0] if isinstance(o, tuple) else o))
                 for l, blk in enumerate(layers)]
        try:
            model.model(torch.tensor([model.encode(text)]))
        finally:
            for h in hooks:
                h.remove()
        out.append(torch.stack([caught[l][0, -1].double() for l in range(len(layers))]))
    return torch.stack(out)


def _direct(model, texts, vector, centre=None):
    h = _states(model, texts) - (0 if centre is None else centre)
    return torch.nn.functional.cosine_similarity(h, vector.double()[None, None], dim=-1).mean(0).numpy()


def test_alignment_equals_a_direct_computation(tiny_llama, items, iv):
    for t in (identity(), leetspeak()):
        means, chunk_means, sizes = alignment(tiny_llama, items, t, iv.vector, chunks=3)
        texts = [p.text for p in encoded(tiny_llama, items, t).prompts]
        np.testing.assert_allclose(means, _direct(tiny_llama, texts, iv.vector), atol=1e-5)
        whole = residual_alignment(tiny_llama, encoded(tiny_llama, items, t), iv.vector)
        np.testing.assert_allclose(means, whole, atol=1e-6)
        assert chunk_means.shape == (3, 3) and sizes == (2, 2, 2)


def test_t_interval_closed_form():
    m, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(4.302652729911275 * 1.0 / np.sqrt(3))
    assert np.isnan(t_interval([1.0])[1])


def test_cached_engine_gives_generate_ids_tokens(tiny_llama, items, iv):
    assert engine_agreement(tiny_llama, items, identity(), max_new_tokens=4) == (6, 6)
    assert engine_agreement(tiny_llama, items, pig_latin(), iv=iv, max_new_tokens=4, batch_size=4) == (6, 6)


def test_diagnosis_runs_on_tiny_models(tiny_llama, items, iv, tmp_path, monkeypatch):
    diag = sys.modules["ivkit.conjugate.diagnose"]  # the package exports a function of the same name

    passes = []
    real = diag.residual_stream
    monkeypatch.setattr(diag, "residual_stream", lambda m, p, **kw: passes.append(len(p)) or real(m, p, **kw))
    tuned = tiny_llama  # the same weights under a second label: enough to check the plumbing and the numbers
    d = diagnose(tiny_llama, tuned, items, [leetspeak()], iv, out=tmp_path, chunks=3, max_new_tokens=3,
                 engine="cached", progress=False)
    # one pass per transform and model serves the raw and centred alignments and the centre
    assert passes == [6] * 4
    df = d.to_pandas()
    assert list(df["condition"]) == ["none", "leet", "none", "leet", "none + iv", "none + iv_random"]
    a = next(x for x in d.alignments if x.model == "tuned" and x.transform == "leet")
    texts = [p.text for p in encoded(tuned, items, leetspeak()).prompts]
    np.testing.assert_allclose(a.layers, _direct(tuned, texts, iv.vector), atol=1e-5)
    assert df.iloc[3]["alignment"] == pytest.approx(a.layers[1])
    assert {r.treatment for r in d.recoveries()} == {"leet", "iv", "iv_random"}
    assert "Centred alignment at layer 1" in d.verdict() and "IV" in repr(d)
    assert "centred_alignment" in d._repr_html_() and "Centred alignment at layer 1" in d._repr_html_()
    # the centred alignment: each model's states minus its mean over both transforms' prompts
    texts = {t.name: [p.text for p in encoded(tuned, items, t).prompts] for t in (identity(), leetspeak())}
    centre = torch.stack([_states(tuned, x).mean(0) for x in texts.values()]).mean(0)
    c = next(x for x in d.centred if x.model == "tuned" and x.transform == "leet")
    np.testing.assert_allclose(c.layers, _direct(tuned, texts["leet"], iv.vector, centre), atol=1e-5)
    assert df.iloc[3]["centred_alignment"] == pytest.approx(c.layers[1])
    assert not np.allclose(c.layers, a.layers, atol=1e-3)
    assert len(d.plot().data) >= 2 and len(d.plot_profiles().data) == 4
    from ivkit.conjugate.diagnose import Diagnosis

    assert Diagnosis.from_dict(d.to_dict()).to_pandas().equals(df)
    # a rerun loads every run and alignment from tmp_path
    again = diagnose(tiny_llama, tuned, items, [leetspeak()], iv, out=tmp_path, chunks=3, max_new_tokens=3,
                     engine="cached", progress=False)
    assert again.to_pandas().equals(df)
    with pytest.raises(InputError, match="one task"):
        diagnose(tiny_llama, tuned, build_probe(["repeat", "uppercase"], n=2), [], iv)


def test_streams_are_kept_per_transform_not_per_name(tiny_llama, items, iv):
    from ivkit.conjugate.diagnose import Streams
    from ivkit.conjugate.runner import LazyModel
    from ivkit.conjugate.transforms import custom

    shouting = custom("none", str.upper, invertible=False)  # the plain transform's name, other prompts
    streams = Streams(LazyModel(tiny_llama, "m"), items, 4)
    plain, loud = streams(identity()), streams(shouting)
    assert not torch.equal(plain, loud)
    texts = [p.text for p in encoded(tiny_llama, items, shouting).prompts]
    np.testing.assert_allclose(loud.double().numpy(), _states(tiny_llama, texts).numpy(), atol=1e-4)
    with pytest.raises(InputError, match="center has shape"):
        alignment(tiny_llama, items, identity(), iv.vector, stream=plain, center=plain[0, 0])
