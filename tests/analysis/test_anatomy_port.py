import pytest
import torch

from ivkit.analysis.anatomy_port import TEMPLATES, answer_in_text, natural_text, portability
from ivkit.core.errors import InputError
from ivkit.core.prompts import PromptTemplate, encode_prompts, sample_prompts
from ivkit.core.tasks import load_task
from ivkit.evaluation import generate, score_prompts

from .test_anatomy_decode import tiny_iv


def test_answer_in_text_on_hand_written_generations():
    assert answer_in_text(' "Apple", she said.', "Apple")
    assert answer_in_text(" and then Apple.", " Apple")
    assert not answer_in_text(" apple pie", "Apple")                      # case-sensitive by default
    assert answer_in_text(" apple pie", "Apple", case_sensitive=False)
    assert not answer_in_text(" Applesauce", "Apple")                     # a whole word, not a prefix
    assert not answer_in_text(" pineapple", "apple")
    assert answer_in_text(" the letter a, then b", "a")
    assert not answer_in_text(" banana", "a")
    assert answer_in_text(' "Paris" is the answer', "Paris", where="first")
    assert not answer_in_text(" It is Paris", "Paris", where="first")
    assert answer_in_text(" C.", "C", where="first") and not answer_in_text("", "C", where="first")
    assert answer_in_text(" café au lait", "café") and not answer_in_text(" cafés", "café")
    with pytest.raises(InputError, match="where"):
        answer_in_text("x", "x", where="last")
    with pytest.raises(InputError, match="empty"):
        answer_in_text("x", "  ")


def test_shipped_templates():
    queries = {t.query for t in TEMPLATES.values()}
    assert {"Q: {input}\nA:", "Input: {input}\nOutput:", "{input} ->"} <= queries and len(queries) >= 5


def test_portability_scores_each_template_with_and_without_the_iv(tiny_llama):
    iv = tiny_iv(tiny_llama)
    mine = PromptTemplate(query="Word: {input}\nResult:", name="mine")
    v = torch.randn(tiny_llama.geometry.d_model, generator=torch.Generator().manual_seed(0))
    res = portability(tiny_llama, "antonym", iv, templates=[TEMPLATES["arrow"], mine], vectors={"rand": v}, n=6,
                      shots=2)
    assert [(r["template"], r["condition"]) for r in res.rows] == [
        (t, c) for t in ("arrow", "mine") for c in ("zero-shot", "zero-shot + IV", "zero-shot + rand", "2-shot")]
    split = load_task("antonym").split(0)
    zero = encode_prompts(tiny_llama, sample_prompts(split.test, style="zero_shot", n=6, seed=0, template=mine,
                                                     stream=7))
    assert zero.prompts[0].text.startswith("Word: ")
    want = score_prompts(tiny_llama, zero, vector=iv).accuracy(1)
    got = [r for r in res.rows if r["template"] == "mine" and r["condition"] == "zero-shot + IV"][0]
    assert got["top1"] == pytest.approx(want) and got["n"] == 6 and got["lo"] <= got["top1"] <= got["hi"]
    assert res.table().shape == (2, 4) and res.plot().data and "Portability" in repr(res)
    with pytest.raises(InputError, match="{input}"):
        portability(tiny_llama, "antonym", iv, templates=[PromptTemplate(query="Q:", name="bad")])


def test_natural_text_matches_generation_and_scoring(tiny_llama):
    iv = tiny_iv(tiny_llama)
    frames = ('The word "{input}" becomes',)
    res = natural_text(tiny_llama, "antonym", iv, frames=frames, n=5, max_new_tokens=3, keep_examples=5)
    assert [r["condition"] for r in res.rows] == ["no vector", "IV"]
    steered = [e for e in res.examples if e["condition"] == "IV"]
    texts = [frames[0].format(input=e["input"]) for e in steered]
    assert [e["generated"] for e in steered] == generate(tiny_llama, texts, iv=iv, max_new_tokens=3, stop=())
    hits = [answer_in_text(e["generated"], e["answer"]) for e in steered]
    assert res.rows[1]["anywhere"] == pytest.approx(sum(hits) / 5) and res.rows[1]["n"] == 5
    assert res.plot().data and "NaturalText" in repr(res)
    with pytest.raises(InputError, match="{input}"):
        natural_text(tiny_llama, "antonym", iv, frames=("no slot",))
    with pytest.raises(InputError, match="at least 1"):
        natural_text(tiny_llama, "antonym", iv, n=0)
