#!/usr/bin/env python
"""The synthetic set-up of Kotha et al. (in-context linear regression), end to end, and its page.

    python scripts/synthetic_study.py                      # runs/synthetic -> docs/synthetic.md
    python scripts/synthetic_study.py --quick --out /tmp/syn --doc /tmp/syn.md --figures /tmp/syn-fig

Pretrains a small GPT-2 on a mixture of a discrete prior (a fixed set of weight vectors) and a Gaussian
prior, fine-tunes it on the discrete prior only, and measures (``ivkit.synthetic.run_study``):
continuous-prior loss before and after fine-tuning by distance to the discrete set and by number
of examples, next to the Bayes-optimal predictors; the conjugate (labels times alpha, prediction
divided by alpha; alpha chosen on validation prompts); the discrete-prior weight each model acts
as if it had; and the heads that carry the "which prior" inference. Everything resumes from
``--out`` (training, measurements and heads are each skipped when done). Writes the page
(``--doc``) and its figures (``--figures``, plotly.js from the CDN), and prints a short report.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ivkit.core.machine import machine_info  # noqa: E402
from ivkit.core.plots import profile_lines, to_html  # noqa: E402
from ivkit.synthetic.data import RegressionTask, discrete_set  # noqa: E402
from ivkit.synthetic.model import ModelConfig  # noqa: E402
from ivkit.synthetic.study import STUDY_PRETRAIN, STUDY_TASK, StudyConfig, StudyResult, run_study  # noqa: E402
from ivkit.synthetic.train import TrainConfig  # noqa: E402

#: The study's sizes (ivkit.synthetic.study's defaults), chosen on validation prompts by scripts/synthetic_pilot.py.
PRETRAIN_STEPS, NOISE, N_DISCRETE = STUDY_PRETRAIN.steps, STUDY_TASK.noise, STUDY_TASK.n_discrete


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/synthetic", help="run directory (resumed)")
    ap.add_argument("--doc", default="docs/synthetic.md")
    ap.add_argument("--figures", default="docs/synthetic", help="folder of the page's figures")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS, help="pretraining steps")
    ap.add_argument("--noise", type=float, default=NOISE, help="label noise sigma")
    ap.add_argument("--n-discrete", type=int, default=N_DISCRETE, help="size of the discrete set")
    ap.add_argument("--finetune-steps", type=int, default=500)
    ap.add_argument("--pilot", default="runs/synthetic_pilot/pilot.jsonl",
                    help="the settings tried by scripts/synthetic_pilot.py (a section of the page; skipped if absent)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the whole script in about a minute")
    return ap.parse_args()


def study_config(quick: bool, seed: int, pretrain_steps: int = PRETRAIN_STEPS, finetune_steps: int = 500, *,
                 noise: float = NOISE, n_discrete: int = N_DISCRETE) -> StudyConfig:
    """The sizes of the study (see docs/synthetic.md for why these)."""
    if quick:
        task = RegressionTask(dim=2, n_points=11)
        return StudyConfig(task=task, model=ModelConfig(dim=2, n_points=11, n_embd=16, n_layer=2, n_head=2),
                           pretrain=TrainConfig(steps=60, batch_size=16, points_start=6, points_steps=30, dims_steps=20,
                                                save_every=30, seed=seed),
                           finetune=TrainConfig(steps=20, batch_size=16, lr=3e-4, warmup=5, schedule="constant",
                                                points_steps=0, dims_steps=0, save_every=10, seed=seed),
                           n_test=200, n_validation=100, examples=(1, 10), head_examples=(2, 5), head_prompts=50,
                           seed=seed)
    task = replace(STUDY_TASK, noise=noise, n_discrete=n_discrete)
    pretrain = replace(STUDY_PRETRAIN, steps=pretrain_steps, seed=seed)
    finetune = TrainConfig(steps=finetune_steps, lr=1e-3, warmup=20, schedule="constant", points_steps=0, dims_steps=0,
                           save_every=100, seed=seed)
    return StudyConfig(task=task, pretrain=pretrain, finetune=finetune, seed=seed)


def load() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def write_figures(res: StudyResult, folder: Path) -> dict[str, str]:
    """Every figure as small HTML (plotly.js from the CDN); returns name -> file name."""
    import pandas as pd

    figs = {"training": _training_figure(res, pd, profile_lines), "curves": res.curves.plot(),
            "distance": res.distance.plot(), "conjugate": res.conjugate.plot(), "distance_bayes": res.distance_bayes.plot(),
            "conjugate_bayes": res.conjugate_bayes.plot(), "implied_prior": res.implied.plot(),
            "heads_pretrained": res.ranking_pretrained.plot(), "heads_finetuned": res.ranking_finetuned.plot(),
            "heads_change": res.change.plot(), "heads_recovery": res.recovery.plot()}
    out = {}
    for name, fig in figs.items():
        to_html(fig, folder / f"{name}.html", self_contained=False)
        out[name] = f"{folder.name}/{name}.html"
    return out


def _training_figure(res: StudyResult, pd, lines):
    frames = []
    for run in (res.pretrain, res.finetune):
        f = run.to_pandas().assign(phase=run.phase)
        f["loss"] = f["loss"].rolling(50, min_periods=1).mean()
        if run.phase == "finetune":
            f["step"] = f["step"] + res.pretrain.losses[-1][0]
        frames.append(f)
    return lines(pd.concat(frames), x="step", y="loss", line="phase", x_title="step (fine-tuning continues the count)",
                 y_title="training MSE (running mean of 50 steps)", title="Training loss: pretraining on the mixture, "
                 "then fine-tuning on the discrete prior")


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def ci(m: float, lo: float, hi: float, fmt: str = ".3f") -> str:
    return f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def pct(m: float, lo: float, hi: float) -> str:
    if not np.isfinite(m):
        return "undefined (no increase to recover)"
    def p(x: float) -> str:
        return f"{x + 0.0:.0%}".replace("-0%", "0%")

    return f"{p(m)} [{p(lo)}, {p(hi)}]"


def sign_verdict(lo: float, hi: float, what: str) -> str:
    if lo > 0:
        return f"**holds**: {what} is positive, its 95% interval excludes 0"
    if hi < 0:
        return f"**does not hold**: {what} is negative (the interval excludes 0)"
    return f"**not shown**: the 95% interval of {what} includes 0"


def window_row(res: StudyResult, losses, name: str) -> str:
    from ivkit.synthetic.measure import mean_interval

    return ci(*mean_interval(losses.window(name, res.config.examples)))


def sanity_section(res: StudyResult, figures: dict[str, str]) -> list[str]:
    from ivkit.synthetic.measure import mean_interval

    lo, hi = res.config.examples
    names = ["pretrained", "fine-tuned", "ridge (continuous Bayes)", "discrete Bayes", "mixture Bayes", "zero predictor"]
    out = ["## 1. What the networks learned", "",
           f"Mean squared error over {lo}-{hi} in-context examples (each test prompt's mean over those positions, "
           f"then the mean over {res.config.n_test} prompts per prior with its 95% t interval). The Bayes rows are the "
           f"best any predictor can do on prompts of that prior (ridge for the continuous prior, the posterior over the "
           f"{res.config.task.n_discrete} vectors for the discrete one, their posterior mixture with "
           f"p = {res.config.task.p_discrete:g} for the "
           f"pretraining mixture); the zero predictor is the prior mean.", "",
           "| predictor | continuous-prior prompts | discrete-prior prompts |", "|---|---|---|"]
    for n in names:
        out.append(f"| {n} | {window_row(res, res.continuous, n)} | {window_row(res, res.discrete, n)} |")
    pre_c = res.continuous.window("pretrained", res.config.examples)
    gain = mean_interval(res.continuous.window("zero predictor", res.config.examples) - pre_c)
    gap = mean_interval(pre_c - res.continuous.window("mixture Bayes", res.config.examples))
    pre_d = res.discrete.window("pretrained", res.config.examples)
    disc_gain = mean_interval(res.discrete.window("ridge (continuous Bayes)", res.config.examples) - pre_d)
    bayes_gain = mean_interval(res.discrete.window("ridge (continuous Bayes)", res.config.examples)
                               - res.discrete.window("discrete Bayes", res.config.examples))
    imp = res.implied.best
    out += ["", f"* The pretrained network beats the zero predictor by {ci(*gain)} (paired over prompts) and is "
            f"{ci(*gap)} above the Bayes mixture on continuous-prior prompts.",
            f"* On discrete-prior prompts, knowing the {res.config.task.n_discrete} vectors is worth {ci(*bayes_gain)} "
            f"over ridge (Bayes); the "
            f"pretrained network's advantage over ridge there is {ci(*disc_gain)}. "
            + (f"It uses the discrete set, partly: it captures {learned_share(res):.0%} of the Bayes "
               f"advantage." if disc_gain[1] > 0 else
               "**It has not learned to use the discrete set**: on discrete-prior prompts it does no better than "
               "ridge, so it behaves as an (imperfect) ridge regressor, not as the Bayes mixture of the two priors."),
            f"* Implied discrete-prior weight (the mixture weight p whose Bayes predictions are closest to the "
            f"network's, on mixture prompts; bootstrap interval over prompts): pretrained "
            f"{ci(*imp['pretrained'], fmt='.3g')}, fine-tuned {ci(*imp['fine-tuned'], fmt='.3g')} "
            f"(pretraining used p = {res.config.task.p_discrete:g}; the grid runs from 0 to 1).", "",
            f"Figures: [loss against examples]({figures['curves']}), [implied prior]({figures['implied_prior']}), "
            f"[training loss]({figures['training']}).", ""]
    return out


def distance_table(prof) -> list[str]:
    f = prof.to_pandas()
    quantities = list(dict.fromkeys(f["quantity"]))
    out = ["| distance to the discrete set (bin mean) | mean ‖w‖ | prompts | " + " | ".join(quantities) + " |",
           "|---" * (3 + len(quantities)) + "|"]
    for b, sub in f.groupby("bin"):
        first = sub.iloc[0]
        cells = [ci(r.mean, r.lo, r.hi, "+.3f") for r in sub.itertuples()]
        out.append(f"| {first['distance']:.2f} | {first['norm']:.2f} | {int(first['prompts'])} | " + " | ".join(cells) + " |")
    return out


def finding1(res: StudyResult, figures: dict[str, str]) -> list[str]:
    from ivkit.synthetic.measure import mean_interval

    ex = res.config.examples
    d = mean_interval(res.continuous.window("fine-tuned", ex) - res.continuous.window("pretrained", ex))
    b_pre, b_ft = res.config.bayes_names
    db = mean_interval(res.continuous.window(b_ft, ex) - res.continuous.window(b_pre, ex))
    nf, nf_b = res.distance.near_minus_far, res.distance_bayes.near_minus_far
    out = ["## 2. Claim 1 (Kotha et al.): fine-tuning raises continuous-prior loss, most near the discrete set", "",
           f"Fine-tuned minus pretrained loss on continuous-prior test prompts, {ex[0]}-{ex[1]} examples: "
           f"{ci(*d, '+.3f')}: {sign_verdict(d[1], d[2], 'the increase')}.", "",
           f"By distance of the prompt's true w to the nearest of the {res.config.task.n_discrete} vectors (quintiles "
           "of the distance; 95% t "
           "intervals over the prompts of each bin):", ""] + distance_table(res.distance) + [
           "", "Far prompts are also long vectors (the mean ‖w‖ column), whose few-example errors are larger, so the "
           "bins mix distance and norm. Near minus far at matched ‖w‖ (the nearer minus the farther half within each "
           f"quartile of ‖w‖, averaged; bootstrap interval): {ci(*nf, '+.3f')}: "
           f"{sign_verdict(nf[1], nf[2], 'near minus far')}.", "",
           f"What the task-inference hypothesis predicts here, measured the same way on the exact Bayes mixture moved "
           f"from p = {res.config.task.p_discrete:g} ('pretrained') to p = {res.config.bayes_p_after:g} ('fine-tuned'): "
           f"increase {ci(*db, '+.3f')} ({sign_verdict(db[1], db[2], 'the increase')}); near minus far at matched ‖w‖ "
           f"{ci(*nf_b, '+.3f')} ({sign_verdict(nf_b[1], nf_b[2], 'near minus far')}"
           + ("; in this set-up the hypothesis itself predicts the largest increase *far* from the set: a near prompt "
              "mistaken for a discrete one is answered almost right, a far one is answered wrong until its examples "
              "overturn the prior" if nf_b[2] < 0 else "") + ").", ""]
    out += distance_table(res.distance_bayes)
    out += ["", f"Figures: [trained networks]({figures['distance']}), [Bayes mixtures]({figures['distance_bayes']}).", ""]
    return out


def sweep_table(sweep) -> list[str]:
    f = sweep.to_pandas()
    alphas = list(dict.fromkeys(f["alpha"]))
    out = ["| model | " + " | ".join(f"α = {a:g}" for a in alphas) + " |", "|---" * (1 + len(alphas)) + "|"]
    for m, sub in f.groupby("model", sort=False):
        out.append(f"| {m} | " + " | ".join(ci(r.mse, r.lo, r.hi) for r in sub.itertuples()) + " |")
    return out


def finding2(res: StudyResult, figures: dict[str, str]) -> list[str]:
    s, sb = res.conjugate, res.conjugate_bayes
    ex = res.config.examples
    out = ["## 3. Claim 2 (Kotha et al.): scaling the labels recovers part of the loss", "",
           f"The conjugate prompt multiplies every label by α; the prediction is divided by α. For ridge this changes "
           f"nothing (tested exactly in `tests/synthetic/test_bayes.py`); for a model that infers the prior it moves "
           f"the prompt away from the discrete set. α is chosen on {res.config.n_validation} validation prompts "
           f"(lowest fine-tuned loss), and reported on the test prompts ({ex[0]}-{ex[1]} examples, 95% t intervals):", ""]
    out += sweep_table(s)
    rec = s.recovery
    verdict = ("**not shown**: the chosen α is 1 (no scaling helps on validation prompts)" if s.chosen == 1.0 else
               sign_verdict(rec[1], rec[2], "the recovered share"))
    f = s.to_pandas()
    pre = f[f["model"] == s.before].set_index("alpha")["mse"]
    cost = pre.drop(1.0).min() - pre.loc[1.0] if len(pre) > 1 else 0.0
    out += ["", f"Chosen α = {s.chosen:g}; share of the fine-tuning increase it removes on test prompts: {pct(*rec)}: "
            f"{verdict}."]
    if cost > 0:
        out += ["", f"The {s.before} row is the conjugate's own cost: scaling the labels raises the {s.before} "
                f"network's loss by at least {cost:.3f} at every α ≠ 1, so the network is not equivariant to the scale "
                f"of the labels the way ridge is; it learned regression at the training scale only."]
    out += ["", "The same for the Bayes mixtures (the hypothesis's prediction):", ""]
    out += sweep_table(sb)
    out += ["", f"Chosen α = {sb.chosen:g}; recovered share {pct(*sb.recovery)}.", "",
            f"Figures: [trained networks]({figures['conjugate']}), [Bayes mixtures]({figures['conjugate_bayes']}).", ""]
    return out


def finding3(res: StudyResult, figures: dict[str, str]) -> list[str]:
    rp, ch, rec = res.ranking_pretrained, res.change, res.recovery
    out = ["## 4. Claim 3: heads carry the \"which prior\" inference, and fine-tuning changes them", "",
           f"Each head's mean output at the query over {rp.n_prompts} continuous-prior validation prompts is patched "
           f"(ivkit's `patch_head_outputs` on the GPT-2 blocks) into runs on as many discrete-prior prompts, at "
           f"{list(rp.examples)} examples; the score is how far the prediction moves toward the ridge answer of the "
           f"discrete-prior prompt (1: all the way; least squares over prompts; bootstrap 95% intervals). The heads of "
           f"the pretrained ranking, scored in both models:", "",
           "| head | pretrained | fine-tuned |", "|---|---|---|"]
    for r in ch.rows:
        out.append(f"| {r['head']} | {ci(r['pretrained'], r['pretrained_lo'], r['pretrained_hi'], '+.3f')} | "
                   f"{ci(r['fine-tuned'], r['fine-tuned_lo'], r['fine-tuned_hi'], '+.3f')} |")
    best = float(np.max(rp.scores))
    out += ["", f"Rank agreement of all heads between the two models: Spearman {ch.spearman:.2f}, top-{ch.k} overlap "
            f"{ch.top_overlap:.2f}. The largest single-head score in the pretrained model is {best:+.3f}.", "",
            f"Patching the pretrained model's outputs of its top-{len(rec.heads)} heads into the fine-tuned model at the "
            f"query, on the first {res.config.head_prompts} continuous-prior test prompts (loss averaged over "
            f"{list(rec.examples)} examples, 95% t intervals; recovered: share of the fine-tuning increase removed, "
            f"bootstrap interval; the random-heads row averages several draws of as many random heads):", "",
            "| condition | MSE | minus fine-tuned (paired) | recovered |", "|---|---|---|---|"]
    rows = {r["condition"]: r for r in rec.rows}
    gap = rows["pretrained"]
    meaningful = gap["vs_hi"] < 0  # the pretrained model is significantly better: there is a loss to recover
    for r in rec.rows:
        share = pct(r["recovered"], r["rec_lo"], r["rec_hi"]) if meaningful else "n/a"
        out.append(f"| {r['condition']} | {ci(r['mse'], r['lo'], r['hi'])} | "
                   f"{ci(r['vs_finetuned'], r['vs_lo'], r['vs_hi'], '+.3f')} | {share} |")
    if not meaningful:
        out += ["", f"At these example counts the pretrained minus fine-tuned loss is "
                f"{ci(gap['vs_finetuned'], gap['vs_lo'], gap['vs_hi'], '+.3f')}: no significant loss to recover, so "
                f"shares of it are not meaningful (n/a); the paired column still shows what each patch does."]
    moved = [r["head"] for r in ch.rows if r["fine-tuned_hi"] < r["pretrained_lo"] or r["fine-tuned_lo"] > r["pretrained_hi"]]
    out += ["", "* Contribution after fine-tuning: " + (f"the intervals of {', '.join(moved)} do not overlap before and "
                                                         f"after, so their contribution changed." if moved else
                                                         "every top head's interval overlaps before and after: no change "
                                                         "shown at this resolution.")]
    top = next(r for r in rec.rows if r["condition"] == "fine-tuned + pretrained top heads")
    conj = next((r for r in rec.rows if r["condition"].startswith("fine-tuned, conjugate")), None)
    if meaningful:
        line = f"* Patching the top heads recovers {pct(top['recovered'], top['rec_lo'], top['rec_hi'])} of the increase"
        rnd = next((r for r in rec.rows if "random heads" in r["condition"]), None)
        if rnd is not None:
            above = top["rec_lo"] > rnd["rec_hi"]
            line += (f", against {pct(rnd['recovered'], rnd['rec_lo'], rnd['rec_hi'])} for as many random heads: "
                     + ("the top heads recover more than random ones (the intervals are apart)" if above else
                        "the intervals overlap, so the top heads are not shown to carry more of the lost behaviour "
                        "than any heads"))
        if conj is not None:
            line += f"; the conjugate recovers {pct(conj['recovered'], conj['rec_lo'], conj['rec_hi'])} on the same prompts"
        all_heads = rows.get("fine-tuned + pretrained all heads")
        out.append(line + ".")
        if all_heads is not None:
            whole = pct(all_heads["recovered"], all_heads["rec_lo"], all_heads["rec_hi"])
            out.append(f"* Patching every head's output recovers {whole}: at the query, what fine-tuning changed in "
                       f"the heads is spread over many of them, not held by the top few.")
    else:
        out.append(f"* Patching the top heads: MSE {top['mse']:.3f} against {rows['fine-tuned']['mse']:.3f} without; "
                   f"no recovery can be shown where there is no significant loss to recover.")
    out += ["", f"Figures: [pretrained heads]({figures['heads_pretrained']}), [fine-tuned heads]({figures['heads_finetuned']}), "
            f"[top heads before and after]({figures['heads_change']}), [recovery by patching]({figures['heads_recovery']}).", ""]
    return out


def setup_section(res: StudyResult) -> list[str]:
    c = res.config
    t, m, pt, ft = c.task, c.model, c.pretrain, c.finetune
    n_params = sum(p.numel() for p in res.pretrain.load().parameters())
    return ["## The set-up", "",
            f"* **Data**: x ~ N(0, I_{t.dim}), y = w·x + ε with σ = {t.noise:g}; prompts of {t.n_points} pairs, so each "
            f"prompt holds the predictions from 0 to {t.n_points - 1} in-context examples. Priors over w: a *discrete* "
            f"set of {t.n_discrete} vectors drawn once from N(0, {t.tau:g}² I) (seed {t.discrete_seed}), and the "
            f"*continuous* N(0, {t.tau:g}² I). Pretraining draws each prompt's prior from the mixture (discrete with "
            f"probability {t.p_discrete:g}); fine-tuning uses the discrete prior only."
            + ("" if (t.n_discrete, t.noise) == (64, 1.0) else
               " The seed's set-up has 64 vectors and σ = 1. Here σ was set to 0.25 before the pilot, so that a "
               "prompt's few first examples identify its vector, and the size of the set and the pretraining steps "
               "were chosen on validation prompts (see \"How the sizes were chosen\")."),
            f"* **Network**: GPT-2 blocks from `transformers` ({m.n_layer} layers, {m.n_head} heads, width {m.n_embd}; "
            f"{n_params:,} parameters). Each position holds one example and the next input, [x_(i-1), y_(i-1), x_i], "
            f"read in by a linear layer; a linear read-out at position i predicts y_i, so no position reads its own "
            f"label. Against one position per input and one per label (x_0, y_0, x_1, ...), this layout halves the "
            f"positions and learns faster: trained on the 8-vector discrete prior alone, it took 0.046 s per step "
            f"against 0.091, and reached in 1000 steps (MSE over 1-40 examples 0.226 on validation prompts) what "
            f"the interleaved layout reached in 2500 (0.227) (`python scripts/synthetic_layouts.py --n-discrete 8 "
            f"--steps 3000`, one thread, beside one other single-thread job).",
            f"* **Pretraining**: {pt.steps} AdamW steps of {pt.batch_size} prompts, learning rate {pt.lr:g} (warm-up "
            f"{pt.warmup}, cosine to 10%), MSE over every position"
            + (f". Curriculum: prompts grow from {pt.points_start} to {t.n_points} pairs over the first "
               f"{pt.points_steps} steps, and the active dimensions from 1 to {t.dim} over the first {pt.dims_steps}."
               if pt.points_steps or pt.dims_steps else "; no curriculum."),
            f"* **Fine-tuning**: {ft.steps} steps of {ft.batch_size} discrete-prior prompts at a constant learning "
            f"rate {ft.lr:g}, from the last pretraining checkpoint.",
            f"* **Measurement**: {c.n_test} test prompts per prior and {c.n_validation} validation prompts (their seeds "
            f"are never used in training); α and the heads are chosen on validation prompts, every number is from "
            f"test prompts. Intervals are 95%: t intervals over prompts for means and paired differences, percentile "
            f"bootstrap (1000 resamples of prompts) for ratios and stratified differences.", ""]


def pilot_section(path: Path) -> list[str]:
    """The settings tried on validation prompts before the study (scripts/synthetic_pilot.py)."""
    import json

    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (r["train"]["steps"], r["task"]["n_discrete"]))
    out = ["## How the sizes were chosen", "",
           "Before the study, `scripts/synthetic_pilot.py` pretrained candidate settings and measured each on "
           f"*validation* prompts only ({'/'.join(str(v) for v in sorted({r.get('n_validation', 500) for r in rows}))} "
           f"per prior; never the test prompts reported above). The study needs a "
           "network that infers which prior a prompt comes from, so the criterion is how much of the discrete Bayes "
           "predictor's advantage over ridge on discrete-prior prompts the pretrained network captures "
           "(share = (ridge − network) / (ridge − discrete Bayes), MSE over 1-40 examples): among the settings whose "
           "pretraining fits 15 minutes, the largest share, its paired 95% interval of ridge − network above 0.",
           "", "| discrete vectors | σ | steps × prompts | pretraining s | discrete prompts: net / ridge / discrete Bayes "
           "| ridge − net, discrete prompts | share | continuous prompts: net / ridge | implied p |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, tr, last = r["task"], r["train"], r["checkpoints"][-1]
        d, c = last["discrete"], last["continuous"]
        p, lo, hi = last["implied_p"]
        out.append(f"| {t['n_discrete']} | {t['noise']:g} | {tr['steps']} × {tr['batch_size']} | {r['train_seconds']:.0f} | "
                   f"{d['net']:.3f} / {d['ridge']:.3f} / {d['discrete']:.3f} | "
                   + (ci(*d["over_ridge"], "+.3f") if "over_ridge" in d else "-") + f" | {last['discrete_gain']:+.2f} | "
                   f"{c['net']:.3f} / {c['ridge']:.3f} | {p:.3g} [{lo:.3g}, {hi:.3g}] |")
    out += ["", f"Reproduce a row: `python scripts/synthetic_pilot.py --out runs/synthetic_pilot/<name> --n-discrete K "
            f"--noise S --steps N --points-steps 0 --dims-steps 0` (one row per `--out` in `{path}`; a rerun replaces "
            f"its row)." + (" Every row was pretrained without curriculum." if all(
                r["train"]["points_steps"] == 0 and r["train"]["dims_steps"] == 0 for r in rows) else ""), ""]
    return out


def implied_line(imp: dict) -> str:
    """What the implied discrete-prior weights before and after fine-tuning say, from their values."""
    (p0, lo0, hi0), (p1, lo1, hi1) = imp["pretrained"], imp["fine-tuned"]
    moved = ("Fine-tuning moved the network toward predicting as if discrete prompts were likelier, the skew the seed "
             "describes (the intervals are apart)." if lo1 > hi0 else
             "Fine-tuning moved it away from the discrete prior (the intervals are apart)." if hi1 < lo0 else
             "The intervals overlap: no shift of the implied weight is shown.")
    tail = (" The pretrained network's partial use of the discrete set is matched by no mixture better than by ridge "
            "(p = 0)." if p0 == 0 else "")
    return (f"* Task inference, read through the implied weight: the Bayes mixture nearest the pretrained network has "
            f"p = {p0:.3g} [{lo0:.3g}, {hi0:.3g}] and the one nearest the fine-tuned network p = {p1:.3g} "
            f"[{lo1:.3g}, {hi1:.3g}]. {moved} The weight is the nearest mixture on a grid, not a posterior the network "
            f"holds.{tail}")


def learned_share(res: StudyResult) -> float:
    """The share of the discrete Bayes predictor's advantage over ridge that the pretrained network
    captures on discrete-prior test prompts."""
    ex = res.config.examples
    ridge = res.discrete.window("ridge (continuous Bayes)", ex).mean()
    return float((ridge - res.discrete.window("pretrained", ex).mean())
                 / (ridge - res.discrete.window("discrete Bayes", ex).mean()))


def limits_section(res: StudyResult) -> list[str]:
    from ivkit.synthetic.measure import mean_interval

    ex = res.config.examples
    learned = mean_interval(res.discrete.window("ridge (continuous Bayes)", ex) - res.discrete.window("pretrained", ex))[1] > 0
    out = ["## What this does and does not show", ""]
    if not learned:
        out += [f"* The seed's explanation needs a pretrained network that infers which prior a prompt comes from. "
                f"Within this budget ({res.config.pretrain.steps} pretraining steps of {res.config.pretrain.batch_size} "
                f"prompts, {res.pretrain.seconds / 60:.0f} min on one CPU thread) the network learns in-context "
                f"regression but not the {res.config.task.n_discrete}-vector prior (section 1), so what fine-tuning does to it "
                f"is not a shift of "
                f"a learned prior inference, and findings 1-3 measured on it test the claims' surface, not their "
                f"mechanism. The Bayes-mixture rows show what the mechanism predicts in this set-up; how many steps a "
                f"network of this size needs to learn the discrete prior was not measured "
                f"(`--pretrain-steps` sets the budget).",
                "* The head scores measure how much a head's continuous-prompt output moves a discrete-prompt "
                "prediction toward ridge. In a network that does not tell the priors apart this is not a 'which "
                "prior' signal: a head can score by carrying anything that differs on average between the two sets of "
                "prompts at the query."]
    else:
        share = learned_share(res)
        imp = res.implied.best
        out += [f"* The pretrained network uses the discrete set (section 1), but only partly: it captures {share:.0%} "
                f"of the discrete Bayes predictor's advantage over ridge, so it sits between ridge and the Bayes mixture "
                f"the seed's explanation assumes. The pilot table shows how much larger sets were learned within the "
                f"budget.",
                implied_line(imp)]
    table = discrete_set(res.config.task)
    gaps = torch.cdist(table, table, compute_mode="donot_use_mm_for_euclid_dist") + 1e9 * torch.eye(len(table))
    out += [f"* Dimension {res.config.task.dim}: each of the {len(table)} vectors has its nearest neighbour "
            f"{gaps.min(1).values.mean().item():.2f} away on average, so the distance of a continuous-prior w to the set "
            f"varies widely between prompts (the distance bins).",
            "* One seed, one network size; the intervals are over prompts, not over training runs, so they do not "
            "include the variation between pretraining runs.", ""]
    return out


def repro_section(res: StudyResult, mach: dict[str, str], run: dict) -> list[str]:
    secs = res.seconds
    total = sum(v for k, v in secs.items() if k != "this session")
    return ["## Reproduce", "", "```", run["command"], "```", "",
            "Every figure on this page comes from that command (it resumes from `runs/synthetic`: training, "
            "measurements and heads are skipped when done; delete the folder to start afresh). The same from the "
            "Python API: `ivkit.synthetic.run_study(\"runs/synthetic\")`.", "",
            f"* Machine: {mach['cpu']}, CPU only, {run['threads']} torch thread(s); the CPU was shared with other "
            f"jobs (load average {run['load_before']} at the start, {run['load_after']} at the end of the run that "
            f"wrote this page), so times are upper bounds for an idle machine.",
            f"* Versions: Python {mach['python']}, torch {mach['torch']}, transformers {mach['transformers']}, numpy "
            f"{mach['numpy']}, ivkit {mach['ivkit']}; {mach['os']}.",
            f"* Seed {res.config.seed} (weights, batches, evaluation prompts, bootstraps); same seed, same numbers.",
            "* Time of each stage when it was computed: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items()
                                                                     if k != "this session")
            + f"; {total / 60:.1f} min in all. The run that wrote this page started {run['started']} and took "
              f"{run['wall']:.0f} s." + whole_study_line(res.out), ""]


def whole_study_line(out: Path) -> str:
    """The whole study's time from an empty --out, if this --out was run that way."""
    import json

    f = Path(out) / "whole_study.json"
    if not f.is_file():
        return ""
    w = json.loads(f.read_text())
    note = f" Recorded by hand: {w['note']}." if w.get("note") else ""
    return (f" The whole study from an empty `--out`, pretraining included, took {w['wall_seconds']:.0f} s "
            f"({w['wall_seconds'] / 60:.1f} min, started {w['started']}, {w['threads']} thread(s), load average "
            f"{w['load_before']} at the start and {w['load_after']} at the end; target: under 30 min).{note}")


def page(res: StudyResult, figures: dict[str, str], mach: dict[str, str], run: dict, pilot: Path) -> str:
    lines = ["# The synthetic set-up: forgetting where the true task is known", "",
             "Kotha et al. (ICLR 2024) first show forgetting where the answer is known exactly: in-context linear "
             "regression. A small transformer pretrained on a mixture of two priors over the regression weights, "
             "then fine-tuned on one of them, gets worse on the other, most for prompts near the fine-tuning prior, "
             "and scaling the labels (a *conjugate* prompt) recovers part of it. Their explanation is *task "
             "inference*: the network infers which prior a prompt comes from, and fine-tuning skews that inference. "
             "`ivkit.synthetic` rebuilds the set-up on a CPU budget and measures each claim next to the Bayes-optimal "
             "predictors, which are known in closed form here. This page is written by `scripts/synthetic_study.py` "
             "from its last run.", ""]
    lines += setup_section(res) + sanity_section(res, figures) + finding1(res, figures) + finding2(res, figures)
    lines += finding3(res, figures) + pilot_section(pilot) + limits_section(res) + repro_section(res, mach, run)
    return "\n".join(lines) + "\n"


def main() -> int:
    args = _args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    cfg = study_config(args.quick, args.seed, args.pretrain_steps, args.finetune_steps, noise=args.noise,
                       n_discrete=args.n_discrete)
    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load()
    fresh = not any(Path(args.out).glob("pretrain/checkpoint-*"))
    t0 = time.perf_counter()
    res = run_study(args.out, cfg, progress=False)
    wall = time.perf_counter() - t0
    if fresh:  # the whole study from an empty --out: keep its time for the page
        from ivkit.core.io import atomic_write_json

        atomic_write_json(Path(args.out) / "whole_study.json", {"started": started, "wall_seconds": round(wall, 1),
                                                                "load_before": load_before, "load_after": load(),
                                                                "threads": args.threads})
    figures = write_figures(res, Path(args.figures))
    text = page(res, figures, machine_info(), {"started": started, "wall": wall, "load_before": load_before,
                                          "load_after": load(), "threads": args.threads,
                                          "command": " ".join(["python", "scripts/synthetic_study.py", *sys.argv[1:]])},
                Path(args.pilot))
    from ivkit.core.io import atomic_write_text

    atomic_write_text(Path(args.doc), text)
    for part in (res.pretrain, res.finetune, res.curves, res.distance, res.conjugate, res.distance_bayes, res.conjugate_bayes,
                 res.implied, res.ranking_pretrained, res.ranking_finetuned, res.change, res.recovery):
        print(repr(part))
    print(f"wall time this run: {wall:.0f} s; stage seconds: "
          + ", ".join(f"{k} {v:.0f}" for k, v in res.seconds.items()))
    print(f"wrote {args.doc} and {len(figures)} figures in {args.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
