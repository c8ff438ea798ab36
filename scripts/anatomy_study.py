"""What an IV is made of, measured on SmolLM2-135M-Instruct: decoding, composition, portability,
baselines, and instruction-built against demonstration-built IVs. Writes docs/anatomy.md and its
figures (docs/anatomy/*.html, plotly.js from the CDN).

    OMP_NUM_THREADS=1 python scripts/anatomy_study.py --out /work/runs/anatomy            # the study
    OMP_NUM_THREADS=1 python scripts/anatomy_study.py --out /tmp/anat-quick --quick       # a small check
    python scripts/anatomy_study.py --out /work/runs/anatomy --doc-only                   # page from what is done

Every step saves its numbers in OUT/steps/<step>.json as soon as it finishes (with its settings'
digest); a rerun skips the steps already done and the extractions resume from their run
directories (OUT/ivs/...), so an interrupted run resumes. The page lists any step not done yet.
Each step calls the same functions, with the same defaults, as the ``ivkit anatomy`` command
named beside it in the page. ``--quick`` uses small prompt counts and writes its page to
OUT/anatomy.md instead of docs/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TQDM_DISABLE", "1")


import ivkit  # noqa: E402
from ivkit.analysis.anatomy_baselines import baseline_vectors, baselines_at_best_layer, iv_with_baselines  # noqa: E402
from ivkit.analysis.anatomy_common import zero_shot_prompts  # noqa: E402
from ivkit.analysis.anatomy_compose import compare_composition, compose  # noqa: E402
from ivkit.analysis.anatomy_decode import decode_vector, logit_lens, top_token_reconstruction  # noqa: E402
from ivkit.analysis.anatomy_instruction import compare_ivs, instruction_iv  # noqa: E402
from ivkit.analysis.anatomy_port import natural_text, portability  # noqa: E402
from ivkit.core.errors import IVKitError  # noqa: E402
from ivkit.core.io import atomic_write_json  # noqa: E402
from ivkit.core.machine import machine_info  # noqa: E402
from ivkit.core.plots import to_html  # noqa: E402
from ivkit.mediation import IndirectEffects  # noqa: E402
from ivkit.vectors import InstructionVector  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anatomy_doc import write_doc  # noqa: E402

log = logging.getLogger("anatomy_study")
MODEL = "smollm2-135m-instruct"
TASKS = ("capitalize", "lowercase_first_letter", "capitalize_first_letter")
COMPOSE = {"target": "capitalize_first_letter", "terms": [(1.0, "lowercase_first_letter"), (1.0, "capitalize")]}
INSTRUCTION_TASKS = ("capitalize", "capitalize_first_letter")

FULL = {"extract": {}, "lens_n": 100, "port_n": 100, "natural_n": 50, "max_new_tokens": 8, "baseline_n": 50,
        "n_valid": 100, "n_test": None, "instruction": {}}
QUICK = {"extract": {"mean_prompts": 12, "trials": 4, "sweep_prompts": 20}, "lens_n": 20, "port_n": 20,
         "natural_n": 6, "max_new_tokens": 6, "baseline_n": 8, "n_valid": 20, "n_test": 30,
         "instruction": {"mean_prompts": 12, "trials": 4, "sweep_prompts": 20}}


class Steps:
    """Each step's result in OUT/steps/<name>.json, keyed by the settings it ran with."""

    def __init__(self, out: Path, settings: dict[str, Any]):
        self.dir, self.settings = out / "steps", settings
        self.key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.dir / f"{name}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("key") == self.key:
                log.info("step %s: done before (%.0f s), loaded", name, saved["seconds"])
                return saved
        t0 = time.perf_counter()
        log.info("step %s ...", name)
        try:
            data = fn()
        except IVKitError as e:  # a measurement that cannot be made here is a result to report, not a crash
            log.warning("step %s could not run: %s", name, e)
            data = {"error": f"{type(e).__name__}: {e}"}
        data.update(key=self.key, seconds=time.perf_counter() - t0, finished=time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                            time.gmtime()))
        atomic_write_json(path, data)
        log.info("step %s: %.0f s", name, data["seconds"])
        return data


def figure(out: Path, name: str, fig: Any) -> str:
    to_html(fig, out / "figures" / f"{name}.html", self_contained=False)
    return f"{name}.html"


def step_extract(model, out: Path, task: str, cfg: dict) -> dict[str, Any]:
    res = ivkit.extract(model, task, out=out / "ivs" / task, progress=False, **cfg["extract"])
    iv = res.iv
    sel = iv.meta.get("layer_selection", {})
    return {"task": task, "dir": str(out / "ivs" / task), "k": iv.k, "layer": iv.layer, "scale": iv.scale,
            "norm": iv.norm, "heads": [f"{l}.{h}" for l, h in iv.heads], "valid_top1": sel.get("top1"),
            "valid_baseline_top1": sel.get("baseline_top1"), "timings": res.timings, "filter": res.filter,
            "settings": cfg["extract"]}


def load_iv(model, out: Path, task: str) -> InstructionVector:
    d = out / "ivs" / task
    return InstructionVector.load(d, model).replace(meta={"source": str(d)})


def step_decode(model, out: Path, task: str, cfg: dict) -> dict[str, Any]:
    iv = load_iv(model, out, task)
    dec = decode_vector(model, iv, top=10)
    prompts = zero_shot_prompts(model, task, "test", n=cfg["lens_n"], seed=int(iv.meta.get("seed") or 0))
    lens = logit_lens(model, iv, prompts)
    rec = top_token_reconstruction(model, iv, prompts)
    return {"task": task, "promoted": dec.promoted, "suppressed": dec.suppressed,
            "lens": lens.to_pandas().to_dict(orient="records"), "answer_gain": lens.answer_gain,
            "layers": lens.layers, "iv_layer": iv.layer, "scale": iv.scale, "reconstruction": rec.rows,
            "n": len(prompts), "figures": {"decode": figure(out, f"decode_{task}", dec.plot()),
                                           "lens": figure(out, f"lens_{task}", lens.plot()),
                                           "reconstruction": figure(out, f"reconstruction_{task}", rec.plot())}}


def step_compose(model, out: Path, cfg: dict) -> dict[str, Any]:
    terms = [(c, load_iv(model, out, t)) for c, t in COMPOSE["terms"]]
    composed = compose(terms)
    composed.save(out / "composed")
    target = COMPOSE["target"]
    res = compare_composition(model, target, composed, load_iv(model, out, target), parts=[iv for _, iv in terms],
                              n_valid=cfg["n_valid"], n_test=cfg["n_test"])
    return {"target": target, "formula": res.formula, "rows": res.scores.rows, "cosines": res.cosines,
            "composed_norm": composed.norm, "figure": figure(out, "compose", res.plot())}


def step_baselines(model, out: Path, task: str, cfg: dict) -> dict[str, Any]:
    iv = load_iv(model, out, task)
    seed = int(iv.meta.get("seed") or 0)
    base = baseline_vectors(model, task, n=cfg["baseline_n"], seed=seed)
    res = iv_with_baselines(model, task, iv, base, seed=seed, n_valid=cfg["n_valid"], n_test=cfg["n_test"])
    at = base.at(iv.layer, norm=iv.norm)
    return {"task": task, "rows": res.rows, "cosine_with_iv": {k: iv.cosine(v) for k, v in at.items()},
            "raw_norms": {k: float(v.norm()) for k, v in base.at(iv.layer).items()},
            "figure": figure(out, f"baselines_{task}", res.plot())}


def step_baselines_best_layer(model, out: Path, task: str, cfg: dict) -> dict[str, Any]:
    iv = load_iv(model, out, task)
    seed = int(iv.meta.get("seed") or 0)
    base = baseline_vectors(model, task, n=cfg["baseline_n"], seed=seed)
    res = baselines_at_best_layer(model, task, iv, base, seed=seed, n_valid=cfg["n_valid"], n_test=cfg["n_test"])
    return {"task": task, "rows": res.rows}


def step_portability(model, out: Path, task: str, cfg: dict) -> dict[str, Any]:
    iv = load_iv(model, out, task)
    base = baseline_vectors(model, task, n=cfg["baseline_n"], seed=int(iv.meta.get("seed") or 0))
    extra = base.at(iv.layer, norm=iv.norm)
    port = portability(model, task, iv, n=cfg["port_n"], vectors=extra)
    nat = natural_text(model, task, iv, n=cfg["natural_n"], max_new_tokens=cfg["max_new_tokens"], vectors=extra)
    return {"task": task, "templates": port.rows, "natural": nat.rows, "examples": nat.examples,
            "layer": iv.layer, "scale": iv.scale, "max_new_tokens": nat.max_new_tokens,
            "figures": {"templates": figure(out, f"portability_{task}", port.plot()),
                        "natural": figure(out, f"natural_{task}", nat.plot())}}


def step_instruction(model, out: Path, task: str, corrupt: str, cfg: dict) -> dict[str, Any]:
    res = instruction_iv(model, task, corrupt=corrupt, out=out / "ivs" / f"{task}.instruction_{corrupt}",
                         **cfg["instruction"])
    demo_dir = out / "ivs" / task
    demo = load_iv(model, out, task)
    cmp = compare_ivs(model, task, res.iv, demo, effects=(res.effects, IndirectEffects.load(demo_dir / "indirect_effects.json")),
                      seed=int(demo.meta.get("seed") or 0), n_valid=cfg["n_valid"], n_test=cfg["n_test"])
    return {"task": task, "corrupt": corrupt, "summary": cmp.summary(), "rows": cmp.scores.rows,
            "instruction": res.iv.meta.get("instruction"), "wrong_instruction": res.iv.meta.get("wrong_instruction"),
            "filter": res.filter, "heads": [f"{l}.{h}" for l, h in res.iv.heads], "layer": res.iv.layer,
            "scale": res.iv.scale, "timings": res.timings, "figure": figure(out, f"instruction_{task}_{corrupt}",
                                                                               cmp.plot())}


def step_extract_instruction_style(model, out: Path, task: str, cfg: dict) -> dict[str, Any]:
    """ivkit.extract(style="instruction"): instruction clean prompts, heads ranked on shuffled demonstrations."""
    d = out / "ivs" / f"{task}.extract_style_instruction"
    res = ivkit.extract(model, task, out=d, progress=False, style="instruction", **cfg["extract"])
    demo_dir = out / "ivs" / task
    demo = load_iv(model, out, task)
    cmp = compare_ivs(model, task, res.iv, demo, names=("extract style=instruction", "demonstration-built"),
                      effects=(res.effects, IndirectEffects.load(demo_dir / "indirect_effects.json")),
                      seed=int(demo.meta.get("seed") or 0), n_valid=cfg["n_valid"], n_test=cfg["n_test"])
    return {"task": task, "summary": cmp.summary(), "rows": cmp.scores.rows, "filter": res.filter,
            "heads": [f"{l}.{h}" for l, h in res.iv.heads], "layer": res.iv.layer, "scale": res.iv.scale}


def plan(model, out: Path, cfg: dict) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    steps += [(f"extract_{t}", lambda t=t: step_extract(model, out, t, cfg)) for t in TASKS]
    steps += [(f"decode_{t}", lambda t=t: step_decode(model, out, t, cfg)) for t in TASKS]
    steps += [("compose", lambda: step_compose(model, out, cfg))]
    steps += [(f"baselines_{t}", lambda t=t: step_baselines(model, out, t, cfg)) for t in TASKS]
    steps += [(f"instruction_{t}_{c}", lambda t=t, c=c: step_instruction(model, out, t, c, cfg))
              for t in INSTRUCTION_TASKS for c in ("wrong", "empty")]
    steps += [(f"portability_{t}", lambda t=t: step_portability(model, out, t, cfg)) for t in TASKS]
    steps += [(f"extract_style_instruction_{t}", lambda t=t: step_extract_instruction_style(model, out, t, cfg))
              for t in INSTRUCTION_TASKS]
    steps += [(f"baselines_best_layer_{t}", lambda t=t: step_baselines_best_layer(model, out, t, cfg)) for t in TASKS]
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="small prompt counts; the page goes to OUT/anatomy.md")
    ap.add_argument("--doc", type=Path, default=None, help="the page (default docs/anatomy.md, OUT/anatomy.md "
                                                           "with --quick)")
    ap.add_argument("--doc-only", action="store_true", help="write the page from the steps done, run nothing")
    ap.add_argument("--only", default=None, help="comma-separated step names to run (others are skipped)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    cfg = QUICK if args.quick else FULL
    doc = args.doc or (args.out / "anatomy.md" if args.quick else Path(__file__).resolve().parent.parent / "docs" /
                       "anatomy.md")
    steps = Steps(args.out, {"cfg": cfg, "model": MODEL, "quick": args.quick})
    if not args.doc_only:
        atomic_write_json(args.out / "machine.json", {**machine_info(), "quick": args.quick, "cfg": cfg})
        model = ivkit.load_model(MODEL)
        only = set(args.only.split(",")) if args.only else None
        for name, fn in plan(model, args.out, cfg):
            if only is None or name in only:
                steps.run(name, fn)
    names = [n for n, _ in plan(None, args.out, cfg)]
    write_doc(args.out, doc, names, steps.key, tasks=list(TASKS), instruction_tasks=list(INSTRUCTION_TASKS),
              quick=args.quick)
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
