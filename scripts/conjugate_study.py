#!/usr/bin/env python
"""Conjugate prompting on two base / tuned pairs, explained with instruction vectors.

    python scripts/conjugate_study.py --out runs/conjugate --doc docs/conjugate.md

For each pair (gemma-3-270m, a base model, and its fine-tuned partner; SmolLM2-135M-Instruct and
its further fine-tuned version):

1. writes the seeded data files (English instruction data, the IV's task file, the lexicon
   supplements) under ``OUT/data/``;
2. fine-tunes the base model on the instruction data (``ivkit.finetune``; skipped when the final
   checkpoint exists);
3. runs the in-context-versus-instruction probe on both models under every transform
   (``ivkit.conjugate.conjugate``), and re-decodes a sample of every run through
   ``ivkit.evaluation.generate_ids`` to check the faster engine gives the same tokens;
4. extracts the base model's IV for the ``repeat`` task (``ivkit.extract``) and runs the IV
   diagnosis (``ivkit.conjugate.diagnose``);
5. writes ``--doc`` and its figures (``docs/conjugate/``, plotly.js from the CDN).

With ``--jobs 2`` the two pairs run in two processes (one torch thread each). Every finished
fine-tune, run, alignment and extraction is stored under ``OUT`` and loaded by a rerun.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

PAIRS = {
    "gemma": {"base": "gemma-3-270m", "title": "gemma-3-270m (base) / fine-tuned"},
    "smollm2": {"base": "smollm2-135m-instruct", "title": "SmolLM2-135M-Instruct / further fine-tuned"},
}
log = logging.getLogger("conjugate_study")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/conjugate")
    ap.add_argument("--doc", default=None, help="write the report here (figures next to it, in a folder of its name)")
    ap.add_argument("--pairs", default="gemma,smollm2")
    ap.add_argument("--pair", default=None, help=argparse.SUPPRESS)  # one pair, in a worker process
    ap.add_argument("--tasks", default="repeat,uppercase")
    ap.add_argument("--transforms", default="none,leet,piglatin,fr")
    ap.add_argument("--n", type=int, default=100, help="prompts per task")
    ap.add_argument("--iv-task", default="repeat")
    ap.add_argument("--steps", type=int, default=20, help="fine-tuning steps")
    ap.add_argument("--save-every", type=int, default=10, help="fine-tuning checkpoints (an interrupted run resumes)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=8, help="fine-tuning batch size")
    ap.add_argument("--train-examples", type=int, default=600)
    ap.add_argument("--engine", default="cached", choices=["cached", "generate_ids"])
    ap.add_argument("--check", type=int, default=6, help="prompts per run re-decoded through generate_ids")
    ap.add_argument("--gen-batch", type=int, default=32, help="prompts per generation batch")
    ap.add_argument("--mean-prompts", type=int, default=50, help="IV extraction: clean prompts for the means")
    ap.add_argument("--trials", type=int, default=20, help="IV extraction: corrupted prompts for the effects")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--jobs", type=int, default=2, help="pairs run in parallel processes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.changed = {k: v for k, v in vars(args).items() if k != "pair" and (v != ap.get_default(k) or k in ("out", "doc"))}
    return args


# --------------------------------------------------------------------------------------------
# One pair, in its own process
# --------------------------------------------------------------------------------------------


class Timer:
    """Seconds per stage, kept in ``OUT/<pair>/timings.json``, summed over the processes that
    worked on it: a stage resumed from disk adds only what the resuming process spent, so the
    total is what the stage cost however many runs it took (a run killed mid-stage records
    nothing for it). The run that completes a stage marks it complete (``complete`` in the file);
    later runs, which only load its results, add nothing. A stage recomputed after a change of
    settings therefore keeps its first time: time changed settings from an empty ``--out``."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def record(self, stage: str, seconds: float) -> None:
        from ivkit.core.io import atomic_write_json

        complete = self.data.setdefault("complete", [])
        if stage in complete:
            return
        self.data[stage] = round(self.data.get(stage, 0.0) + seconds, 1)
        complete.append(stage)
        atomic_write_json(self.path, self.data)


def write_data(out: Path, args) -> dict[str, Path]:
    from ivkit.conjugate.data import instruction_data, task_examples, write_json, write_supplement

    d = out / "data"
    files = {"instruct": d / "instruct.json", "iv_task": d / f"{args.iv_task}.json",
             "fr": d / "fr_extra.jsonl", "de": d / "de_extra.jsonl"}
    if not files["instruct"].exists():
        write_json(files["instruct"], instruction_data(args.train_examples, seed=args.seed))
    if not files["iv_task"].exists():
        write_json(files["iv_task"], task_examples(args.iv_task, n=300, seed=args.seed))
    for lang in ("fr", "de"):
        if not files[lang].exists():
            write_supplement(files[lang], lang)
    return files


def finetune_pair(pair: str, out: Path, files: dict[str, Path], args, timer: Timer) -> Path:
    """The tuned model's directory, fine-tuning it unless its final checkpoint exists."""
    import ivkit

    run = out / pair / "ft"
    final = run / f"checkpoint-{args.steps}"
    if final.exists() and any(final.glob("*.safetensors")):
        return final
    t0 = time.perf_counter()
    res = ivkit.finetune(ivkit.load_model(PAIRS[pair]["base"]), str(files["instruct"]), run, steps=args.steps,
                         lr=args.lr, batch_size=args.batch_size, save_every=args.save_every, seed=args.seed,
                         progress=False)
    losses = [loss for _, loss in res.losses]
    timer.data["loss_first_last"] = [losses[0], losses[-1]] if losses else None
    timer.record("finetune", time.perf_counter() - t0)
    return final


def check_engine(pair: str, out: Path, items, transforms, models: dict, args, iv=None) -> dict:
    """Agreement of the cached engine with generate_ids on a spread of ``args.check`` items of
    every (model, transform) run, stored in ``OUT/<pair>/engine_check.json``."""
    from ivkit.conjugate.probe import engine_agreement
    from ivkit.core.io import atomic_write_json

    path = out / pair / "engine_check.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    step = max(1, len(items) // max(args.check, 1))
    sample = items[::step][:args.check]
    for label, lm in models.items():
        for t in transforms:
            with_iv = iv is not None and label == "tuned" and t.name == "none"
            for cond, vec in [("plain", None)] + ([("iv", iv)] if with_iv else []):
                key = f"{label}/{t.name}/{cond}"
                if key in done or args.check < 1 or args.engine != "cached":
                    continue
                same, n = engine_agreement(lm.get(), sample, t, iv=vec, batch_size=args.gen_batch)
                done[key] = [same, n]
                atomic_write_json(path, done)
    return done


def run_pair(pair: str, args) -> None:
    """Every stage of one pair (each resumed from ``OUT/<pair>`` where it already ran)."""
    import torch

    torch.set_num_threads(args.threads)
    from ivkit.conjugate.cli import write_diagnosis, write_result
    from ivkit.conjugate.diagnose import diagnose, extract_task_iv
    from ivkit.conjugate.lexicon import Lexicon
    from ivkit.conjugate.probe import build_probe
    from ivkit.conjugate.runner import LazyModel, conjugate
    from ivkit.conjugate.transforms import get_transform
    from ivkit.models.loading import load_model

    out = Path(args.out)
    timer = Timer(out / pair / "timings.json")
    files = write_data(out, args)
    tuned_dir = finetune_pair(pair, out, files, args, timer)
    lexicons = {lang: Lexicon.from_file(files[lang]) for lang in ("fr", "de")}
    transforms = [get_transform(t, lexicons) for t in args.transforms.split(",")]
    items = build_probe(args.tasks.split(","), n=args.n, seed=args.seed)
    base = PAIRS[pair]["base"]
    t0 = time.perf_counter()
    res = conjugate(base, str(tuned_dir), items, transforms, out=out / pair, engine=args.engine,
                    batch_size=args.gen_batch, seed=args.seed, progress=False)
    timer.record("probe", time.perf_counter() - t0)
    write_result(res, out / pair / "report")
    iv_dir = out / pair / f"iv-{args.iv_task}"
    t0, finished = time.perf_counter(), (iv_dir / "iv.json").exists()
    iv = extract_task_iv(load_model(base), files["iv_task"], out=iv_dir, mean_prompts=args.mean_prompts,
                         trials=args.trials, seed=args.seed, progress=False)
    if not finished:  # a finished extraction is only loaded (the model load is not extraction time)
        timer.record("iv_extraction", time.perf_counter() - t0)
    t0 = time.perf_counter()
    diag = diagnose(base, str(tuned_dir), [it for it in items if it.task == args.iv_task], transforms, iv, probe=res,
                    out=out / pair, engine=args.engine, batch_size=args.gen_batch, seed=args.seed, progress=False)
    timer.record("diagnosis", time.perf_counter() - t0)
    write_diagnosis(diag, out / pair / "report")
    t0 = time.perf_counter()
    models = {"base": LazyModel(base, "base"), "tuned": LazyModel(str(tuned_dir), "tuned")}
    check_engine(pair, out, items, transforms, models, args, iv=iv)
    timer.record("engine_check", time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# The parent: workers, load sampling, the report
# --------------------------------------------------------------------------------------------


class LoadSampler(threading.Thread):
    """The 1-minute load average every 30 s while the study runs (the CPU is shared)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self.stop.wait(30)


def run_workers(pairs: list[str], args) -> None:
    argv = [sys.executable, __file__, *[a for a in sys.argv[1:] if not a.startswith("--pair")]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    pending = list(pairs)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            pair = pending.pop(0)
            logf = Path(args.out) / pair / "log.txt"
            logf.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen([*argv, "--pair", pair], env=env, stdout=open(logf, "a"), stderr=subprocess.STDOUT)
            running.append((pair, proc))
        time.sleep(5)
        for pair, proc in list(running):
            if proc.poll() is not None:
                running.remove((pair, proc))
                if proc.returncode != 0:
                    raise SystemExit(f"pair {pair} failed (exit {proc.returncode}); see {args.out}/{pair}/log.txt")


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.pair:
        run_pair(args.pair, args)
        return
    pairs = args.pairs.split(",")
    fresh = not any((Path(args.out) / p / "timings.json").exists() for p in pairs)
    sampler = LoadSampler()
    sampler.start()
    t0 = time.perf_counter()
    if args.jobs > 1:
        run_workers(pairs, args)
    else:
        for pair in pairs:
            run_pair(pair, args)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    summary = {"wall_seconds": round(wall, 1), "load_mean": round(sum(sampler.samples) / len(sampler.samples), 2),
               "load_max": round(max(sampler.samples), 2)}
    whole = Path(args.out) / "whole_study.json"  # the wall time of a run that started from an empty --out
    if fresh:
        from ivkit.core.io import atomic_write_json

        atomic_write_json(whole, {**summary, "jobs": args.jobs, "threads": args.threads})
    summary["whole"] = json.loads(whole.read_text()) if whole.exists() else None
    if args.doc:
        from ivkit.core.machine import machine_info

        write_doc(Path(args.doc), args, pairs, summary, machine_info())
    print(json.dumps(summary))


# --------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------


def ci(x: tuple | list, nd: int = 2) -> str:
    import math

    if x is None or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in x):
        return "n/a"
    return f"{x[0]:.{nd}f} [{x[1]:.{nd}f}, {x[2]:.{nd}f}]"


def rates_table(res) -> list[str]:
    df = res.to_pandas()
    tasks = [*res.tasks, "all"]
    lines = ["| model | transform | " + " | ".join(f"in-context, {t}" for t in tasks) +
             " | instruction, all | neither, all | cut by the budget | word coverage |",
             "|---|---|" + "---|" * (len(tasks) + 4)]
    for (model, transform), sub in df.groupby(["model", "transform"], sort=False):
        cells = []
        for t in tasks:
            r = sub[sub["task"] == t].iloc[0]
            cells.append(ci((r["in_context"], r["in_context_lo"], r["in_context_hi"])))
        a = sub[sub["task"] == "all"].iloc[0]
        cov = f"{a['coverage']:.2f}" if a["coverage"] is not None and a["coverage"] == a["coverage"] else "-"
        lines.append(f"| {model} | {transform} | " + " | ".join(cells) +
                     f" | {ci((a['instruction'], a['instruction_lo'], a['instruction_hi']))} | "
                     f"{ci((a['neither'], a['neither_lo'], a['neither_hi']))} | {a['truncated']} of {a['n']} | {cov} |")
    return lines


def recovery_table(recs) -> list[str]:
    lines = ["| treatment | task | drop (base - tuned, plain) | gain (treated tuned - plain tuned) | recovery |",
             "|---|---|---|---|---|"]
    for r in recs:
        rec = ci(r.value) if r.defined else "undefined (the drop's interval includes 0)"
        lines.append(f"| {r.treatment} | {r.task} | {ci(r.drop)} | {ci(r.gain)} | {rec} |")
    return lines


def diagnosis_table(diag) -> list[str]:
    df = diag.to_pandas()
    lines = [f"| model | prompts | alignment at layer {diag.iv_layer} | centred alignment at layer {diag.iv_layer} | "
             f"peak alignment (layer) | in-context, {diag.task} |", "|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        al = ci((r["alignment"], r["alignment_lo"], r["alignment_hi"]), 3) if r.get("alignment") == r.get("alignment") \
            else "-"
        c = r.get("centred_alignment")
        cal = ci((c, r["centred_alignment_lo"], r["centred_alignment_hi"]), 3) if c is not None and c == c else "-"
        peak = f"{r['peak_alignment']:.3f} ({int(r['peak_layer'])})" if r.get("peak_alignment") == r.get("peak_alignment") \
            else "-"
        lines.append(f"| {r['model']} | {r['condition']} | {al} | {cal} | {peak} | "
                     f"{ci((r['in_context'], r['in_context_lo'], r['in_context_hi']))} ({r['count']}/{r['n']}) |")
    return lines


def pair_section(pair: str, out: Path, plots: Path, args) -> tuple[list[str], dict]:
    from ivkit.conjugate.diagnose import Diagnosis
    from ivkit.conjugate.results import ConjugateResult
    from ivkit.core.plots import to_html

    rep = out / pair / "report"
    res = ConjugateResult.from_dict(json.loads((rep / "result.json").read_text()))
    diag = Diagnosis.from_dict(json.loads((rep / "diagnosis.json").read_text()))
    timings = json.loads((out / pair / "timings.json").read_text())
    checks = json.loads((out / pair / "engine_check.json").read_text()) if (out / pair / "engine_check.json").exists() else {}
    title = PAIRS[pair]["title"]
    figs = {"in_context": res.plot(title=f"In-context rate per transform: {title}"),
            "diagnosis": diag.plot(title=f"IV diagnosis ({diag.task}): {title}"),
            "alignment": diag.plot_profiles(title=f"Alignment with the base IV per layer: {title} "
                                                  f"(solid: base, dotted: tuned)"),
            "alignment_centred": diag.plot_profiles(centred=True, title=f"Centred alignment with the base IV per "
                                                    f"layer: {title} (solid: base, dotted: tuned)")}
    for name, fig in figs.items():
        to_html(fig, plots / f"{pair}_{name}.html", self_contained=False)
    loss = timings.get("loss_first_last")
    sel = diag.iv_info.get("layer_selection") or {}
    same, n = sum(v[0] for v in checks.values()), sum(v[1] for v in checks.values())
    lines = [f"## {title}", "",
             f"Base: `{PAIRS[pair]['base']}`. Tuned: the base fully fine-tuned for {args.steps} steps (batch "
             f"{args.batch_size}, learning rate {args.lr:g}) on the English instruction data"
             + (f"; loss {loss[0]:.2f} -> {loss[1]:.2f}" if loss else "") +
             f" ({timings.get('finetune', 'n/a')} s when it ran).", "",
             "### In-context rate (95% Wilson intervals)", "", *rates_table(res), "",
             f"Figure: [`{plots.name}/{pair}_in_context.html`]({plots.name}/{pair}_in_context.html).", "",
             "### Recovery (95% paired bootstrap intervals, 2000 resamples)", "", *recovery_table(
                 [res.recovery(s, t) for s in res.transforms if s != "none" for t in [*res.tasks, None]]), "",
             f"### IV diagnosis ({diag.task})", "",
             f"The base model's IV for `{diag.task}`: heads {' '.join(f'{l}.{h}' for l, h in diag.iv_info['heads'])}, "
             f"injected after layer {diag.iv_layer} at scale {diag.iv_scale:g} (chosen on the task's validation split: "
             f"top-1 {sel.get('top1', float('nan')):.2f} against {sel.get('baseline_top1', float('nan')):.2f} without "
             f"it, {sel.get('n', '?')} zero-shot prompts). Alignment: mean cosine between the last-token residual "
             f"stream and that IV, with a t interval over {diag.iv_info.get('chunks')} groups of prompts. Centred "
             f"alignment: the same after subtracting each model's mean last-token state over all its prompts (every "
             f"transform), which removes the direction every prompt shares; it compares transforms within a "
             f"model.", "",
             *diagnosis_table(diag), "", *recovery_table([r for r in diag.recoveries() if r.treatment.startswith("iv")]), "",
             "Generated reading of the numbers:", "", *[f"* {line}" for line in diag.verdict().splitlines()], "",
             f"Figures: [`{pair}_diagnosis.html`]({plots.name}/{pair}_diagnosis.html), "
             f"[`{pair}_alignment.html`]({plots.name}/{pair}_alignment.html), "
             f"[`{pair}_alignment_centred.html`]({plots.name}/{pair}_alignment_centred.html).", ""]
    info = {"timings": timings, "engine_same": same, "engine_n": n}
    return lines, info


def write_doc(doc: Path, args, pairs: list[str], summary: dict, mach: dict) -> None:
    """The generated part of ``doc`` (tables, figures, set-up, time); the hand-written reading
    after `MARKER` is kept."""
    out = Path(args.out)
    plots = doc.with_suffix("")
    plots.mkdir(parents=True, exist_ok=True)
    cmd = "python scripts/conjugate_study.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in args.changed.items())
    sections, infos = [], {}
    for pair in pairs:
        lines, infos[pair] = pair_section(pair, out, plots, args)
        sections += lines
    stage_times = "; ".join(f"{p}: " + ", ".join(f"{k} {v} s" for k, v in i["timings"].items()
                                                    if isinstance(v, (int, float))) for p, i in infos.items())
    same = sum(i["engine_same"] for i in infos.values())
    n = sum(i["engine_n"] for i in infos.values())
    reading = PLACEHOLDER
    if doc.exists() and MARKER in doc.read_text():
        reading = doc.read_text().split(MARKER, 1)[1].strip()
    w = summary.get("whole")
    whole_text = (f"the whole study, from an empty `--out`, took {w['wall_seconds'] / 60:.1f} min of wall time "
                  f"({w['jobs']} processes of {w['threads']} torch thread(s); 1-minute load average {w['load_mean']} "
                  f"on average, {w['load_max']} at most)." if w else "no run from an empty `--out` was timed.")
    summary = {k: v for k, v in summary.items() if k != "whole"}
    text = DOC.format(cmd=cmd, whole_text=whole_text, sections="\n".join(sections), same=same, n_checked=n,
                      stage_times=stage_times, analysis=MARKER + "\n\n" + reading, plots=plots.name, args=args, **summary, **mach)
    doc.write_text(text + "\n")


MARKER = "<!-- The reading below is written by hand and kept when the script regenerates the doc. -->"
PLACEHOLDER = "## What this run shows\n\n(Not written yet: read the tables, then write it here.)"

DOC = """# Conjugate prompting and implicit task inference, explained with instruction vectors

Generated by `{cmd}`
(so do the figures in `{plots}/` next to this file; they load plotly.js from its CDN).

**Question** (Kotha et al., ICLR 2024; Jiang et al. 2024). Fine-tuning may not erase a capability
but change which task the model infers from a prompt, most for prompts that look like the
fine-tuning data; moving the prompt away from that distribution while keeping the task
(*conjugate prompting*: Leetspeak, Pig Latin, translation) would then bring the capability back.
If so, a conjugated prompt should put the tuned model's residual stream back in line with the
base model's instruction vector (IV) for the task, and injecting that IV should recover what
conjugation recovers.

**Probe** (`ivkit.conjugate.probe`). {args.n} prompts per in-context task ({args.tasks}), each two
demonstrations (`Q: x / A: f(x)`, x a few English words) and a last query that is an instruction:
an arithmetic question ("What is 16 plus 2?") or a fill-in-the-blank ("The capital of Suriname is
___."), half each, generated from seed {args.seed}. The in-context answer is f(query); following
the instruction (18, Paramaribo) does not count. A transform is applied to every text field of the
prompt (not to the `Q:`/`A:` scaffold), so the in-context answer becomes s(f(query)); each built-in
transform commutes with each task on every prompt (checked). Greedy decoding, 10 new tokens, cut at
EOS and at the first newline. **Scoring, exactly**: with leading whitespace stripped, the output
counts as *in-context* if it starts with the transformed answer (case-sensitive), or if all 10
tokens were used without a newline or EOS and the answer starts with the output (the budget cut a
matching output: column "cut by the budget"); else as *instruction* if an instruction answer (as
given or transformed) occurs in it as a whole word (case-insensitive); else *neither*. Translation
is word-level through the built-in English-French lexicon plus a few function words
(`OUT/data/fr_extra.jsonl`); words it lacks stay English ("word coverage" is the translated share).

**Fine-tuning data** (`ivkit.conjugate.data.instruction_data`, seed {args.seed}): {args.train_examples} English
pairs, about 40% arithmetic questions with their answers, the rest questions and fill-in-the-blanks
built from the built-in tasks (capitals, currencies, antonyms, occupations, ...), written by
`ivkit.finetune` as `Q: {{instruction}}\\nA: {{answer}}`, the probe's own format. They are drawn from
the same generators as the probe's queries, so some queries also occur in the training data.

**Engine.** The probe decoded with `engine={args.engine}`: the models' own KV-cached `generate` under
the IV hooks, because `ivkit.evaluation.generate_ids` re-runs the whole sequence for each of the 10
tokens and the study would not fit its time budget. A spread of {args.check} prompts of every run was
decoded again through `generate_ids`: the same 10 tokens on {same} of {n_checked}.

**Machine.** {cpu}, {cores} cores, {ram_gib} GiB; Python {python}, torch {torch}, transformers
{transformers}, numpy {numpy}, ivkit {ivkit}; {args.threads} torch thread(s) per process, {args.jobs}
process(es). Embedded models are de-quantised 4-bit GGUF weights (SmolLM2 Q4_1, gemma Q4_K_M).
**Time**: {whole_text} The run that wrote this page took {wall_seconds} s of wall time (finished
stages are loaded from disk; 1-minute load average {load_mean} on average, {load_max} at most, on
{cores} cores). Seconds per stage, summed over the runs that computed it: {stage_times}.

{sections}
{analysis}"""


if __name__ == "__main__":
    main()
