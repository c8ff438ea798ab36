"""The three backends (torch, transformer-lens, nnsight) give the same numbers.

Each backend gets its own copy of the same tiny model (the same seeded weights): booting a
TransformerLens bridge changes the HF model it wraps, so the models are not shared.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import ivkit
from ivkit import InstructionVector, indirect_effects
from ivkit.activations import head_activations
from ivkit.core.arch import ARCHITECTURES
from ivkit.core.errors import BackendError, ModelLoadError
from ivkit.models.hooks import add_to_residual, record_residual

from ..conftest import make_tiny, prompts_of_mixed_lengths

warnings.filterwarnings("ignore", category=FutureWarning)

BACKENDS = ("torch", "transformer-lens", "nnsight")


def _bridge_tokenizer(tokenizer):
    """What a TransformerLens user passes to boot_transformers offline: a tokenizer that says it
    adds BOS (otherwise the bridge re-loads it from the hub)."""
    tok = copy.copy(tokenizer)
    tok.init_kwargs = {**tokenizer.init_kwargs, "add_bos_token": True, "name_or_path": "tiny"}
    return tok


def _load(kind: str, tokenizer, backend: str, **kw) -> ivkit.IVModel:
    return ivkit.load_model(make_tiny(kind, len(tokenizer)), tokenizer, name=f"tiny-{kind}", backend=backend, **kw)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def trio(request, tokenizer):
    """``{backend: IVModel}`` over identical weights of one tiny family."""
    return {b: _load(request.param, tokenizer, b) for b in BACKENDS}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


def test_backend_names_and_wrapped_objects(trio):
    assert {m.backend.name for m in trio.values()} == set(BACKENDS)
    tl = trio["transformer-lens"]
    # the wrapped objects hand back the same weights
    assert tl.backend.bridge.original_model is tl.model
    assert trio["nnsight"].backend.nn_model._module is trio["nnsight"].model


def test_mean_activations_agree(trio):
    enc = prompts_of_mixed_lengths(trio["torch"], n=5)  # left padding inside each batch
    acts = {b: head_activations(m, enc, batch_size=3) for b, m in trio.items()}
    assert acts["torch"].abs().max() > 0.1  # not trivially zero
    for b in ("transformer-lens", "nnsight"):
        assert _max_diff(acts[b], acts["torch"]) <= 1e-5, b


@pytest.mark.parametrize("metric", ["prob", "logit"])
def test_naive_aie_and_top_k_agree(trio, metric):
    ref = trio["torch"]
    clean = prompts_of_mixed_lengths(ref, n=4)
    corrupted = prompts_of_mixed_lengths(ref, n=2, style="shuffled")
    means = head_activations(ref, clean).mean(0)
    effects = {b: indirect_effects(m, corrupted, means, method="naive", metric=metric, progress=False)
               for b, m in trio.items()}
    # patches move the metric (random tiny models put little probability on any one token)
    assert effects["torch"].aie.abs().max() > (1e-4 if metric == "prob" else 1e-2)
    # tolerances well below the effects: probabilities differ by ~3e-9 across backends, effects ~5e-4
    tol = 1e-7 if metric == "prob" else 1e-5
    fast = indirect_effects(ref, corrupted, means, method="fast", metric=metric, progress=False)
    assert _max_diff(fast.aie, effects["torch"].aie) <= tol
    top = {b: {(l, h) for l, h, _ in e.top_heads(5)} for b, e in effects.items()}
    for b in ("transformer-lens", "nnsight"):
        assert _max_diff(effects[b].per_trial, effects["torch"].per_trial) <= tol, b
        assert top[b] == top["torch"], b
        assert effects[b].info["backend"] == b


def test_default_method_follows_the_backend(trio):
    ref = trio["torch"]
    corrupted = prompts_of_mixed_lengths(ref, n=2, style="shuffled")
    means = head_activations(ref, corrupted).mean(0)
    assert indirect_effects(ref, corrupted, means, progress=False).method == "fast"
    assert indirect_effects(trio["transformer-lens"], corrupted, means, progress=False).method == "naive"
    with pytest.raises(BackendError, match="method='fast'.*transformer-lens.*TransformerBridge replaces the blocks"):
        indirect_effects(trio["transformer-lens"], corrupted, means, method="fast", progress=False)


def test_fast_runs_on_a_local_nnsight_model_and_matches_traced_naive(trio):
    """Locally, the exact engine runs on the HF modules nnsight wraps; it must give what the naive
    loop gives when every pass is an nnsight trace, on every trial."""
    nn = trio["nnsight"]
    corrupted = prompts_of_mixed_lengths(nn, n=3, style="shuffled")  # different lengths: one padded batch
    means = head_activations(nn, prompts_of_mixed_lengths(nn, n=4)).mean(0)
    # the logit metric: on a 600-token random model, probability effects are too small to compare
    fast = indirect_effects(nn, corrupted, means, metric="logit", progress=False, fallback=False)
    traced = indirect_effects(nn, corrupted, means, metric="logit", method="naive", progress=False)
    assert fast.method == "fast" and traced.method == "naive"
    assert traced.aie.abs().max() > 1e-2  # the patches do something
    assert _max_diff(fast.per_trial, traced.per_trial) <= 1e-5
    assert [h[:2] for h in fast.top_heads(5)] == [h[:2] for h in traced.top_heads(5)]


def test_attribution_agrees_where_gradients_flow(trio):
    ref = trio["torch"]
    corrupted = prompts_of_mixed_lengths(ref, n=3, style="shuffled")
    means = head_activations(ref, prompts_of_mixed_lengths(ref, n=4)).mean(0)
    att = {b: indirect_effects(m, corrupted, means, method="attribution", metric="logit", progress=False)
           for b, m in trio.items()}
    assert att["torch"].aie.abs().max() > 1e-2
    for b in ("transformer-lens", "nnsight"):
        assert _max_diff(att[b].per_trial, att["torch"].per_trial) <= 1e-5, b


def test_iv_build_and_injected_logits_agree(trio):
    ref = trio["torch"]
    enc = prompts_of_mixed_lengths(ref, n=4)
    means = head_activations(ref, enc).mean(0)
    heads = [(0, 1), (1, 2), (2, 0)]
    ivs = {b: InstructionVector.build(m, means, heads=heads) for b, m in trio.items()}
    zs = prompts_of_mixed_lengths(ref, n=3, style="zero_shot", shots=0)
    logits = {}
    for b, m in trio.items():
        batch = m.make_batch(zs.input_ids)
        plain = m.forward(batch)
        with ivs["torch"].apply(m, layer=1, scale=2.0):
            logits[b] = m.forward(batch)
        assert _max_diff(logits[b], plain) > 1e-3, f"{b}: the IV did not change the logits"
        # hooks are gone after the block
        assert _max_diff(m.forward(batch), plain) == 0.0
    for b in ("transformer-lens", "nnsight"):
        assert _max_diff(ivs[b].vector, ivs["torch"].vector) <= 1e-5, b
        assert _max_diff(logits[b], logits["torch"]) <= 1e-5, b


def test_residual_record_agrees(trio):
    zs = prompts_of_mixed_lengths(trio["torch"], n=3, style="zero_shot", shots=0)
    out = {}
    for b, m in trio.items():
        with record_residual(m) as res:
            m.forward(m.make_batch(zs.input_ids))
        out[b] = torch.stack([res[l] for l in range(m.geometry.n_layers)])
    for b in ("transformer-lens", "nnsight"):
        assert _max_diff(out[b], out["torch"]) <= 1e-5, b


# --------------------------------------------------------------------------------------------
# An independent oracle: TransformerLens's own patching module
# --------------------------------------------------------------------------------------------


def test_transformer_lens_patching_module_matches_naive_aie(trio):
    """``get_act_patch_attn_head_out_by_pos`` at the last position, with the mean activations as
    its "clean cache", must give each trial's per-head effect."""
    import pandas as pd
    from transformer_lens.patching import get_act_patch_attn_head_out_by_pos

    from ivkit.mediation import METRICS

    tl = trio["transformer-lens"]
    bridge, g = tl.backend.bridge, tl.geometry
    ref = trio["torch"]
    means = head_activations(ref, prompts_of_mixed_lengths(ref, n=4)).mean(0)
    corrupted = prompts_of_mixed_lengths(ref, n=2, style="shuffled")
    ours = indirect_effects(ref, corrupted, means, method="naive", progress=False)
    items = METRICS["prob"].prepare(corrupted)
    for i, item in enumerate(items):
        tokens = torch.tensor([item.ids])
        T = tokens.shape[1]
        cache = {f"blocks.{l}.attn.hook_z": means[l][None, None].expand(1, T, g.n_heads, g.d_head)
                 for l in range(g.n_layers)}

        def prob(logits, target=item.first_token):
            return torch.softmax(logits[0, -1].float(), -1)[target]

        base = prob(bridge(tokens))
        index = pd.DataFrame([(l, T - 1, h) for l in range(g.n_layers) for h in range(g.n_heads)],
                             columns=["layer", "pos", "head"])
        patched = get_act_patch_attn_head_out_by_pos(bridge, tokens, cache, prob, index_df=index,
                                                     index_axis_names=None)
        theirs = patched.view(g.n_layers, g.n_heads) - base
        assert _max_diff(theirs, ours.per_trial[i]) <= 1e-5


# --------------------------------------------------------------------------------------------
# Model forms, remote dry run, device_map
# --------------------------------------------------------------------------------------------


def test_bridge_and_nnsight_objects_pick_their_backend(tokenizer):
    from nnsight import TransformersModel
    from transformer_lens.model_bridge import TransformerBridge

    hf = make_tiny("llama", len(tokenizer))
    bridge = TransformerBridge.boot_transformers("tiny-llama", hf_model=hf, tokenizer=_bridge_tokenizer(tokenizer))
    m = ivkit.load_model(bridge)
    assert m.backend.name == "transformer-lens" and m.model is hf
    with pytest.raises(BackendError, match="transformer-lens"):
        ivkit.load_model(bridge, backend="nnsight")

    hf2 = make_tiny("llama", len(tokenizer))
    nn_model = TransformersModel(hf2, tokenizer=tokenizer)
    m2 = ivkit.load_model(nn_model)
    assert m2.backend.name == "nnsight" and m2.model is hf2
    enc = prompts_of_mixed_lengths(m, n=3)
    assert _max_diff(head_activations(m, enc), head_activations(m2, enc)) <= 1e-5


def test_deprecated_language_model_is_accepted(tokenizer):
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = LanguageModel(make_tiny("llama", len(tokenizer)), tokenizer=tokenizer)
    assert ivkit.load_model(lm).backend.name == "nnsight"


def test_nnsight_traces_serialize_for_remote_execution(tokenizer):
    """``remote="local"`` is nnsight's serialization dry run: each trace is serialized as for NDIF,
    deserialized and run here. Reads come back only as saved tensors."""
    local = _load("llama", tokenizer, "torch")
    dry = _load("llama", tokenizer, "nnsight", remote="local")
    assert dry.backend.remote == "local" and not dry.backend.supports_grad
    enc = prompts_of_mixed_lengths(local, n=3)
    means = head_activations(local, enc).mean(0)
    assert _max_diff(head_activations(dry, enc), head_activations(local, enc)) <= 1e-5
    corrupted = prompts_of_mixed_lengths(local, n=2, style="shuffled").subset([0])
    a = indirect_effects(local, corrupted, means, method="naive", progress=False)
    b = indirect_effects(dry, corrupted, means, progress=False)
    assert b.method == "naive" and _max_diff(a.per_trial, b.per_trial) <= 1e-5
    with pytest.raises(BackendError, match="method='fast'.*runs remotely"):
        indirect_effects(dry, corrupted, means, method="fast", progress=False)
    vec = torch.randn(local.geometry.d_model)
    batch = local.make_batch(enc.input_ids)
    with add_to_residual(local, 1, vec):
        want = local.forward(batch)
    with add_to_residual(dry, 1, vec):
        got = dry.forward(batch)
    assert _max_diff(got, want) <= 1e-5
    with pytest.raises(BackendError, match="attribution"):
        indirect_effects(dry, corrupted, means, method="attribution", progress=False)


def test_device_map_auto_loads_through_accelerate(tiny_llama_dir, tiny_llama):
    for backend in ("torch", "nnsight"):
        m = ivkit.load_model(str(tiny_llama_dir), device_map="auto", backend=backend)
        enc = prompts_of_mixed_lengths(m, n=3)
        assert _max_diff(head_activations(m, enc), head_activations(tiny_llama, enc)) <= 1e-5


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_bridge_in_compatibility_mode_is_refused(tokenizer):
    from transformer_lens.model_bridge import TransformerBridge

    hf = make_tiny("llama", len(tokenizer))
    bridge = TransformerBridge.boot_transformers("tiny-llama", hf_model=hf, tokenizer=_bridge_tokenizer(tokenizer))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge.enable_compatibility_mode(disable_warnings=True)
    with pytest.raises(BackendError, match="compatibility mode"):
        ivkit.load_model(bridge)


def test_architecture_the_bridge_does_not_support(tokenizer):
    from transformers import LlamaForCausalLM

    class HomeMadeForCausalLM(LlamaForCausalLM):
        pass

    hf = HomeMadeForCausalLM(make_tiny("llama", len(tokenizer)).config)
    hf.config.architectures = ["HomeMadeForCausalLM"]
    hf.config.model_type = "homemade"
    ivkit.register_architecture("homemade", ARCHITECTURES["llama"], overwrite=True)
    try:
        assert ivkit.load_model(hf, tokenizer).backend.name == "torch"  # ivkit itself handles it
        with pytest.raises(BackendError, match="TransformerLens cannot build a bridge for HomeMadeForCausalLM"):
            ivkit.load_model(hf, tokenizer, backend="transformer-lens")
    finally:
        ARCHITECTURES.pop("homemade", None)


def test_backend_option_errors(tokenizer, tiny_llama):
    with pytest.raises(ModelLoadError, match="unknown backend 'jax'"):
        ivkit.load_model(tiny_llama, backend="jax")
    with pytest.raises(BackendError, match="needs backend='nnsight'"):
        ivkit.load_model(make_tiny("llama", len(tokenizer)), tokenizer, backend="torch", remote="local")


def test_layer_sweep_runs_through_the_backend_and_agrees(trio):
    ref = trio["torch"]
    means = head_activations(ref, prompts_of_mixed_lengths(ref, n=4)).mean(0)
    iv = InstructionVector.build(ref, means, heads=[(0, 1), (1, 2)])
    zs = prompts_of_mixed_lengths(ref, n=4, style="zero_shot", shots=0)
    sweeps = {b: ivkit.layer_sweep(m, iv.vector, zs, scales=(1.0, 4.0), progress=False) for b, m in trio.items()}
    assert sweeps["torch"].method == "fast" and sweeps["nnsight"].method == "fast"
    assert sweeps["transformer-lens"].method == "naive"
    traced = ivkit.layer_sweep(trio["nnsight"], iv.vector, zs, scales=(1.0, 4.0), method="naive", progress=False)
    sweeps["nnsight-traced"] = traced
    for b in ("transformer-lens", "nnsight", "nnsight-traced"):
        assert _max_diff(torch.tensor(sweeps[b].mean_prob), torch.tensor(sweeps["torch"].mean_prob)) <= 1e-5, b
        assert sweeps[b].top1 == sweeps["torch"].top1, b
