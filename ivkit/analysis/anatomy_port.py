"""Portability: does an IV still work under prompt templates it was not extracted with, and in
natural text?

* `portability`: zero-shot top-1 on the test split under each template of
  `TEMPLATES` (or the user's own `PromptTemplate`), without the
  IV, with it (its own layer and scale, not re-chosen: that is the question), with any other
  vectors given (the baselines), and with clean few-shot prompts in that template for reference.
* `natural_text`: greedy generation (`ivkit.evaluation.generate`) from sentence-style
  prompts (`SENTENCE_FRAMES`) with and without the IV, scored by `answer_in_text`:
  does the answer appear as a whole word within the first ``max_new_tokens`` generated tokens
  (``anywhere``), and is it the first word (``first``)? Whole words, case-sensitive by default
  (so ``"Apple"`` is not found in ``"apple"``). A one-letter answer such as ``"a"`` also matches
  the article: the no-vector row is the floor that shows how often that happens by chance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import InputError
from ..core.prompts import PromptTemplate, encode_prompts, sample_prompts
from ..core.stats import wilson_interval
from ..core.tasks import Task, load_task
from ..evaluation import generate, iv_protocol, score_prompts
from ..models.model import IVModel
from ..vectors import InstructionVector
from .anatomy_common import accuracy_row

#: The prompt templates shipped for portability tests (the first is ivkit's default).
TEMPLATES: dict[str, PromptTemplate] = {
    "qa": PromptTemplate(),
    "input_output": PromptTemplate(query="Input: {input}\nOutput:", name="input_output"),
    "arrow": PromptTemplate(query="{input} ->", name="arrow"),
    "question_answer": PromptTemplate(query="Question: {input}\nAnswer:", name="question_answer"),
    "xy": PromptTemplate(query="x = {input}\ny =", name="xy"),
}

#: Sentence-style prompts for `natural_text`, with ``{input}``; none names the task.
SENTENCE_FRAMES: tuple[str, ...] = (
    'The word "{input}" becomes',
    "I looked at {input} for a while and finally wrote down",
    'When my friend said "{input}", I replied with',
)

_EDGE = r"[A-Za-z0-9À-ÖØ-öø-ÿ]"


def _words(text: str) -> str:
    return text.strip().strip("\"'“”‘’.,:;!?()[]")


def answer_in_text(generated: str, answer: str, *, where: str = "anywhere", case_sensitive: bool = True) -> bool:
    """Whether ``answer`` (stripped) is in ``generated`` as a whole word (``where="anywhere"``) or
    is its first word once quotes and punctuation are stripped (``where="first"``)."""
    if where not in ("anywhere", "first"):
        raise InputError(f"where must be 'anywhere' or 'first', got {where!r}")
    ans = answer.strip()
    if not ans:
        raise InputError("the answer is empty")
    flags = 0 if case_sensitive else re.IGNORECASE
    if where == "first":
        first = _words(generated).split()
        return bool(first) and re.fullmatch(re.escape(ans), _words(first[0]), flags) is not None
    return re.search(rf"(?<!{_EDGE}){re.escape(ans)}(?!{_EDGE})", generated, flags) is not None


def _templates(templates: Sequence[PromptTemplate] | Mapping[str, PromptTemplate] | None) -> dict[str, PromptTemplate]:
    if templates is None:
        return dict(TEMPLATES)
    items = templates.items() if isinstance(templates, Mapping) else [(t.name, t) for t in templates]
    out = {}
    for name, t in items:
        if not isinstance(t, PromptTemplate) or "{input}" not in t.query:
            raise InputError(f"template {name!r} must be a PromptTemplate whose query contains {{input}}")
        out[str(name)] = t
    if not out:
        raise InputError("no templates given")
    return out


@dataclass(frozen=True)
class Portability:
    """Zero-shot top-1 per template and condition (`portability`).

    Attributes:
        rows: ``template, query, condition, top1, lo, hi, n``; conditions ``zero-shot``,
            ``zero-shot + IV``, ``zero-shot + <vector>`` for each extra vector, ``few-shot``.
        layer, scale: where the vectors were injected.
    """

    task: str
    rows: list[dict[str, Any]]
    layer: int | None
    scale: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def table(self):
        """Templates as rows, conditions as columns (top-1)."""
        return self.to_pandas().pivot(index="template", columns="condition", values="top1")

    def plot(self, title: str | None = None):
        from ..core.plots import grouped_interval_bars

        return grouped_interval_bars(self.to_pandas(), x="template", y="top1", lo="lo", hi="hi", group="condition",
                                     y_title="top-1 (test)", title=title or f"{self.task}: the IV under other "
                                                                           f"templates (layer {self.layer}, "
                                                                           f"x{self.scale:g})")

    def __repr__(self) -> str:
        iv = [r for r in self.rows if r["condition"] == "zero-shot + IV"]
        cells = ", ".join(f"{r['template']} {r['top1']:.2f}" for r in iv)
        return f"Portability({self.task!r}, zero-shot + IV per template: {cells})"


@torch.no_grad()
def portability(model: IVModel, task: Task | str, iv: InstructionVector, *,
                templates: Sequence[PromptTemplate] | Mapping[str, PromptTemplate] | None = None,
                vectors: Mapping[str, Float[Tensor, " d_model"]] | None = None, n: int | None = 100,
                seed: int | None = None, few_shot: bool = True, shots: int | None = None,
                batch_size: int = 16, progress: bool = False) -> Portability:
    """See the module docstring. ``vectors`` are added like the IV (its layer and scale); ``seed``
    and ``shots`` default to the IV's (so the test split is the one it was not built on)."""
    task = load_task(task)
    iv.check_compatible(model)
    templates = _templates(templates)
    seed, shots, _ = iv_protocol(iv, task, seed=seed, shots=shots)
    injection, layer = iv.resolve_injection()
    vectors = dict(vectors or {})
    split = task.split(seed)
    rows = []
    for name, t in templates.items():
        common = dict(n=n, seed=seed, template=t, stream=7)
        zero = encode_prompts(model, sample_prompts(split.test, style="zero_shot", **common))
        conds: list[tuple[str, Any, Any]] = [("zero-shot", zero, None), ("zero-shot + IV", zero, iv)]
        conds += [(f"zero-shot + {k}", zero, v) for k, v in vectors.items()]
        if few_shot:
            few = encode_prompts(model, sample_prompts(split.test, style="few_shot", demo_pool=split.train,
                                                       shots=shots, **common))
            conds.append((f"{shots}-shot", few, None))
        for cond, prompts, vec in conds:
            where = {} if vec is None else ({"vector": vec} if isinstance(vec, InstructionVector) else
                                            {"vector": vec, "layer": layer, "scale": iv.scale})
            if vec is not None and not isinstance(vec, InstructionVector) and layer is None:
                raise InputError("extra vectors are added after the IV's layer, and this IV has none (heads injection)")
            s = score_prompts(model, prompts, batch_size=batch_size, **where)
            rows.append({"template": name, "query": t.query, "condition": cond, **accuracy_row(s.ranks)})
    return Portability(task.name, rows, layer, iv.scale, {"seed": seed, "shots": shots, "injection": injection,
                                                          "split": "test"})


@dataclass(frozen=True)
class NaturalText:
    """How often greedy generations from sentence prompts contain the answer (`natural_text`).

    Attributes:
        rows: ``frame, condition, anywhere, anywhere_lo, anywhere_hi, first, first_lo, first_hi, n``.
        examples: a few ``{frame, condition, input, answer, generated}`` per frame and condition.
        max_new_tokens: the window the answer must appear in.
    """

    task: str
    rows: list[dict[str, Any]]
    examples: list[dict[str, str]]
    max_new_tokens: int
    info: dict[str, Any] = field(default_factory=dict)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self, title: str | None = None):
        from ..core.plots import grouped_interval_bars

        return grouped_interval_bars(self.to_pandas(), x="frame", y="anywhere", lo="anywhere_lo", hi="anywhere_hi",
                                     group="condition", y_title=f"answer within {self.max_new_tokens} tokens",
                                     title=title or f"{self.task}: the answer in free generation")

    def __repr__(self) -> str:
        cells = "; ".join(f"{r['condition']} {r['anywhere']:.2f}" for r in self.rows[:6])
        return f"NaturalText({self.task!r}, {len(self.rows)} rows, within {self.max_new_tokens} tokens: {cells})"


def _hit_rate(hits: list[bool], prefix: str) -> dict[str, Any]:
    ci = wilson_interval(sum(hits), len(hits))
    return {prefix: sum(hits) / len(hits) if hits else None, f"{prefix}_lo": ci[0] if ci else None,
            f"{prefix}_hi": ci[1] if ci else None}


def natural_text(model: IVModel, task: Task | str, iv: InstructionVector, *,
                 frames: Sequence[str] = SENTENCE_FRAMES, vectors: Mapping[str, Float[Tensor, " d_model"]] | None = None,
                 n: int = 50, max_new_tokens: int = 8, seed: int | None = None, case_sensitive: bool = True,
                 batch_size: int = 16, keep_examples: int = 3, progress: bool = False) -> NaturalText:
    """See the module docstring: ``n`` test queries in each frame, generated without a vector, with
    the IV (its layer and scale) and with each of ``vectors`` (added at the IV's layer and scale)."""
    task = load_task(task)
    iv.check_compatible(model)
    if not frames or any("{input}" not in f for f in frames):
        raise InputError("every sentence frame must contain {input}")
    if n < 1 or max_new_tokens < 1:
        raise InputError(f"n and max_new_tokens must be at least 1, got {n} and {max_new_tokens}")
    seed, _, _ = iv_protocol(iv, task, seed=seed)
    queries = task.split(seed).test
    order = torch.randperm(len(queries), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    picked = [queries[i] for i in order]
    _, layer = iv.resolve_injection()
    conds: list[tuple[str, dict[str, Any]]] = [("no vector", {}), ("IV", {"iv": iv})]
    conds += [(k, {"vector": v, "layer": layer, "scale": iv.scale}) for k, v in (vectors or {}).items()]
    rows, examples = [], []
    for frame in frames:
        texts = [frame.format(input=q.input) for q in picked]
        for cond, how in conds:
            out = generate(model, texts, max_new_tokens=max_new_tokens, stop=(), batch_size=batch_size,
                           progress=progress, **how)
            anywhere = [answer_in_text(g, q.output, case_sensitive=case_sensitive) for g, q in zip(out, picked)]
            first = [answer_in_text(g, q.output, where="first", case_sensitive=case_sensitive)
                     for g, q in zip(out, picked)]
            rows.append({"frame": frame, "condition": cond, **_hit_rate(anywhere, "anywhere"),
                         **_hit_rate(first, "first"), "n": len(picked)})
            examples += [{"frame": frame, "condition": cond, "input": q.input, "answer": q.output, "generated": g}
                         for q, g in list(zip(picked, out))[:keep_examples]]
    return NaturalText(task.name, rows, examples, max_new_tokens, {"seed": seed, "layer": layer, "scale": iv.scale,
                                                                  "case_sensitive": case_sensitive})
