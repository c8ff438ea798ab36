"""Writes docs/anatomy.md from the steps scripts/anatomy_study.py saved (OUT/steps/*.json), and copies
their figures next to it. Only measured numbers appear; a step not done yet is listed as missing.

    python scripts/anatomy_study.py --out /work/runs/anatomy --doc-only
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
STUDY = "OMP_NUM_THREADS=1 python scripts/anatomy_study.py --out runs/anatomy"


def acc(r: dict[str, Any] | None, key: str = "top1", lo: str = "lo", hi: str = "hi") -> str:
    if not r or r.get(key) is None:
        return "–"
    return f"{r[key]:.2f} [{r[lo]:.2f}, {r[hi]:.2f}]"


def tok(t: str) -> str:
    return "`" + repr(t).replace("`", "'") + "`"


def num(x: Any, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def load_steps(out: Path, names: list[str], key: str) -> tuple[dict[str, dict], list[str]]:
    done, missing = {}, []
    for n in names:
        p = out / "steps" / f"{n}.json"
        data = json.loads(p.read_text()) if p.exists() else None
        if data is None or data.get("key") != key:
            missing.append(n)
        else:
            done[n] = data
    return done, missing


def fig_link(fig_dir: str, name: str | None, label: str) -> str:
    return f"[{label}]({fig_dir}/{name})" if name else ""


def section_setup(m: dict, done: dict, missing: list[str], quick: bool) -> list[str]:
    secs = sum(d.get("seconds", 0) for d in done.values())
    dates = sorted(d["finished"] for d in done.values() if "finished" in d)
    lines = [
        "## Set-up", "",
        f"* Model: `{MODEL}` (SmolLM2-135M-Instruct loaded from its GGUF file, Q4_1 weights de-quantised to "
        "float32: the numbers are for those weights, not the original bf16 ones). Seed 0 everywhere; the task "
        "splits are ivkit's seeded 70/9/21% train/valid/test.",
        f"* Machine: {m.get('os', m.get('platform'))}, {m.get('cores', m.get('cpus'))} CPU cores shared with other jobs "
        f"running at the same time; "
        f"this study ran as one process with `OMP_NUM_THREADS={m.get('omp_num_threads')}`, so its times are "
        "wall-clock times on a busy machine, roughly twice what it takes alone on two free cores.",
        f"* Versions: Python {m.get('python')}, torch {m.get('torch')}, transformers {m.get('transformers')}, "
        f"ivkit {m.get('ivkit')}.",
        f"* Time: {secs / 60:.1f} min over the {len(done)} steps done"
        + (f" (finished between {dates[0]} and {dates[-1]})" if dates else "") + ".",
        f"* Command: `{STUDY}{' --quick' if quick else ''}` (resumable: every step is saved as it finishes). "
        "Each section names the `ivkit anatomy` command that computes the same thing for one task.",
        "* Accuracies are first-token top-1 with their 95% Wilson interval in brackets; `n` is the number of "
        "queries. Layers and scales are chosen on the validation split; every reported accuracy is on the test "
        "split.", ""]
    if quick:
        lines += ["**This page comes from the `--quick` check (small prompt counts): its numbers are not results.**", ""]
    if missing:
        lines += ["**Not measured yet** (the page was written before these steps finished; rerun the command to "
                  "resume): " + ", ".join(f"`{n}`" for n in missing) + ". Sections that need them are marked.", ""]
    return lines


def section_ivs(done: dict, tasks: list[str]) -> list[str]:
    lines = ["## The demonstration-built IVs", "",
             "Extracted with `ivkit extract`'s defaults (10-shot clean prompts, 100 of them for the mean head "
             "outputs, 25 shuffled-label trials, exact AIE, top 10 heads, layer and scale from 1, 2, 3, 4 chosen "
             "on 100 zero-shot validation prompts).", "",
             "| task | layer | scale | norm | valid top-1 (no vector) | heads (layer.head, by AIE) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for t in tasks:
        d = done.get(f"extract_{t}")
        if d is None:
            lines.append(f"| {t} | not measured yet | | | | | |")
            continue
        lines.append(f"| {t} | {d['layer']} | {d['scale']:g} | {d['norm']:.2f} | {num(d['valid_top1'])} "
                     f"({num(d['valid_baseline_top1'])}) | {' '.join(d['heads'])} | {d['seconds']:.0f} |")
    settings = next((d.get("settings") for n, d in done.items() if n.startswith("extract_") and d.get("settings")),
                    None)
    if settings:
        lines += ["", "Settings changed from the defaults for this run: " + ", ".join(f"{k}={v}" for k, v in
                                                                                      settings.items()) + "."]
    return lines + ["", f"Command for one task: `ivkit extract {MODEL} TASK --out runs/anatomy/ivs/TASK`.", ""]


def section_decode(done: dict, tasks: list[str], figs: str) -> list[str]:
    lines = ["## Decoding: the tokens an IV promotes", "",
             "Each IV read through the final norm and the unembedding as if it were the last residual stream "
             "(`decode_vector`); the logit lens adds it (times its scale) after each layer to the last-token "
             "residual stream of zero-shot test prompts (the first 100 of the test split) and reads that stream "
             "directly (`logit_lens`; the layers above are skipped); the reconstruction injects only the IV's "
             "projection onto the read-out directions of its top-N decoded tokens, at the IV's layer and scale "
             "(`top_token_reconstruction`).",
             "", f"Command: `ivkit anatomy decode {MODEL} --iv runs/anatomy/ivs/TASK --task TASK --out DIR`.", ""]
    for t in tasks:
        d = done.get(f"decode_{t}")
        lines.append(f"### {t}")
        lines.append("")
        if d is None or "error" in (d or {}):
            lines += [f"Not measured yet{': ' + d['error'] if d else ''}.", ""]
            continue
        f = d["figures"]
        lines += ["Promoted: " + " ".join(tok(x) for x, _ in d["promoted"]),
                  "", "Suppressed: " + " ".join(tok(x) for x, _ in d["suppressed"]), ""]
        gains = d["answer_gain"]
        best = max(range(len(gains)), key=lambda i: gains[i])
        lines += [f"Logit lens: the answer token's log-probability rises most when the IV is added after layer "
                  f"{d['layers'][best]} ({gains[best]:+.2f} nats on average, n={d['n']}); at the IV's own layer "
                  f"{d['iv_layer']}: {gains[d['layers'].index(d['iv_layer'])]:+.2f} nats.", "",
                  "| top tokens N | zero-shot top-1 (test) | cosine with the IV (= its norm / the IV's) |",
                  "|---|---|---|"]
        for r in d["reconstruction"]:
            label = "no vector" if r["n_tokens"] == 0 else ("whole IV" if r["n_tokens"] is None else str(r["n_tokens"]))
            lines.append(f"| {label} | {acc(r)} | {r['cosine']:.3f} |")
        links = ", ".join(fig_link(figs, f[k], k) for k in ("decode", "lens", "reconstruction"))
        lines += ["", reconstruction_verdict(d["reconstruction"]), "", f"Figures: {links}.", ""]
    return lines


def reconstruction_verdict(rows: list[dict]) -> str:
    whole = next(r for r in rows if r["n_tokens"] is None)
    parts = [r for r in rows if r["n_tokens"]]
    close = [r for r in parts if r["hi"] >= whole["lo"]]
    if close:
        r = close[0]
        return (f"The fewest top tokens whose projection's interval reaches the whole IV's ({acc(whole)}): N = "
                f"{r['n_tokens']} ({acc(r)}, cosine {r['cosine']:.2f}).")
    best = max(parts, key=lambda r: r["top1"]) if parts else None
    return (f"No N up to {parts[-1]['n_tokens']} reaches the whole IV's interval ({acc(whole)}); the best is N = "
            f"{best['n_tokens']} with {acc(best)}: the IV's effect is not carried by the directions of the tokens "
            "it promotes." if best else "")


def scores_table(rows: list[dict], extra: dict[str, Any] | None = None, extra_name: str = "") -> list[str]:
    head = "| vector | layer | scale | chosen on | zero-shot top-1 (test) | n |" + (f" {extra_name} |" if extra else "")
    out = [head, "|---|---|---|---|---|---|" + ("---|" if extra else "")]
    for r in rows:
        cell = f" {num(extra.get(r['name']), '.3f')} |" if extra else ""
        out.append(f"| {r['name']} | {num(r['layer'], 'd')} | {num(r['scale'], 'g')} | {r['chosen'] or '–'} | "
                   f"{acc(r)} | {r['n']} |{cell}")
    return out


def overlap(a: dict, b: dict) -> bool:
    return not (a["hi"] < b["lo"] or b["hi"] < a["lo"])


def section_compose(done: dict, figs: str) -> list[str]:
    d = done.get("compose")
    lines = ["## Composition", ""]
    if d is None or "error" in d:
        return lines + [f"Not measured yet{': ' + d['error'] if d else ''}.", ""]
    rows = {r["name"]: r for r in d["rows"]}
    lines += [f"`{d['formula']}` (the two IVs added, norm {d['composed_norm']:.2f}) on {d['target']}, against "
              f"{d['target']}'s own IV and each term alone; each vector's layer and scale chosen on the validation "
              "split for it (`compare_composition`).", "",
              *scores_table(d["rows"], d["cosines"], "cosine with the composed vector"), ""]
    c, own = rows.get("composed"), rows.get("own IV")
    if c and own:
        verdict = ("the intervals overlap: at this n the composed vector is not distinguishable from the task's own IV"
                   if overlap(c, own) else ("the composed vector is below the task's own IV (intervals disjoint)"
                                            if c["top1"] < own["top1"] else
                                            "the composed vector is above the task's own IV (intervals disjoint)"))
        lines += [f"Composed {acc(c)} against own IV {acc(own)}: {verdict}.", ""]
    return lines + [f"Command: `ivkit anatomy compose {MODEL} --iv runs/anatomy/ivs/lowercase_first_letter --iv "
                    f"runs/anatomy/ivs/capitalize --out runs/anatomy/composed --task {d['target']} --own "
                    f"runs/anatomy/ivs/{d['target']}`. Figure: {fig_link(figs, d['figure'], 'compose')}.", ""]


def section_baselines(done: dict, tasks: list[str], figs: str) -> list[str]:
    lines = ["## Baselines: what the heads add", "",
             "Beside each IV: the task vector (mean last-token residual stream of 50 clean 10-shot training prompts "
             "at the IV's layer, in the style of Hendel et al., here *added* rather than substituted) and the "
             "mean-difference vector (that mean minus the zero-shot prompts' mean), both rescaled to the IV's norm; "
             "\"matched\" injects them at the IV's layer and scale, \"scale chosen\" at the scale the validation "
             "split picks for them at that layer (`iv_with_baselines`), and \"layer and scale chosen\" frees the layer too: "
             "each layer's own baseline at the IV's norm, the best layer and scale on the validation split "
             "(`baselines_at_best_layer`).", "",
             f"Command: `ivkit anatomy baselines {MODEL} TASK --iv runs/anatomy/ivs/TASK --out DIR`.", ""]
    for t in tasks:
        d = done.get(f"baselines_{t}")
        lines += [f"### {t}", ""]
        if d is None or "error" in d:
            lines += [f"Not measured yet{': ' + d['error'] if d else ''}.", ""]
            continue
        cos = ", ".join(f"{k} {v:.3f}" for k, v in d["cosine_with_iv"].items())
        raw = ", ".join(f"{k} {v:.1f}" for k, v in d["raw_norms"].items())
        free = done.get(f"baselines_best_layer_{t}")
        rows = d["rows"] + (free["rows"][1:] if free and "error" not in free else [])
        note = "" if free and "error" not in free else " (the rows at each baseline's own best layer: not measured yet)"
        lines += scores_table(rows) + ["", baselines_verdict(rows) + note,
                                            "", f"Cosine with the IV: {cos}. Norms before rescaling: {raw}. "
                                                f"Figure: {fig_link(figs, d['figure'], 'baselines')}.", ""]
    return lines


def baselines_verdict(rows: list[dict]) -> str:
    by = {r["name"]: r for r in rows}
    iv = by["IV"]
    others = [r for r in rows if r["name"] not in ("IV", "no vector")]
    best = max(others, key=lambda r: r["top1"])
    rel = ("above every baseline (its interval clear of the best one's)" if iv["lo"] > best["hi"] else
           "not distinguishable from the best baseline at this n" if overlap(iv, best) else "below the best baseline")
    return f"The IV ({acc(iv)}) is {rel}: best baseline {best['name']} {acc(best)}."


def portability_verdict(rows: list[dict]) -> str:
    names = list(dict.fromkeys(r["template"] for r in rows))
    helped = []
    for name in names:
        cells = {r["condition"]: r for r in rows if r["template"] == name}
        if cells["zero-shot + IV"]["lo"] > cells["zero-shot"]["hi"]:
            helped.append(name)
    return (f"The IV lifts zero-shot accuracy above the no-vector interval under {len(helped)} of {len(names)} "
            f"templates ({', '.join(helped) or 'none'}).")


def section_portability(done: dict, tasks: list[str], figs: str) -> list[str]:
    lines = ["## Portability: other templates, natural text", "",
             "The IV at its own layer and scale (not re-chosen) on zero-shot test prompts written with each shipped "
             "template, beside no vector, the two norm-matched baselines and clean 10-shot prompts in the same "
             "template (`portability`). Then free greedy generation from three sentence frames (no task named) "
             "with and without the vectors: is the answer a whole word, case-sensitive, within the first generated "
             "tokens (\"anywhere\"), and is it the first word (\"first\")? (`natural_text`)", "",
             f"Command: `ivkit anatomy portability {MODEL} TASK --iv runs/anatomy/ivs/TASK --out DIR`.", ""]
    for t in tasks:
        d = done.get(f"portability_{t}")
        lines += [f"### {t}", ""]
        if d is None or "error" in d:
            lines += [f"Not measured yet{': ' + d['error'] if d else ''}.", ""]
            continue
        conds = list(dict.fromkeys(r["condition"] for r in d["templates"]))
        lines += ["| template (query) | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
        for name in dict.fromkeys(r["template"] for r in d["templates"]):
            cells = {r["condition"]: r for r in d["templates"] if r["template"] == name}
            q = next(iter(cells.values()))["query"].replace("\n", "\\n")
            lines.append(f"| {name} (`{q}`) | " + " | ".join(acc(cells.get(c)) for c in conds) + " |")
        n = d["templates"][0]["n"]
        lines += ["", f"n = {n} test queries per cell. {portability_verdict(d['templates'])}", "",
                  f"| sentence frame | vector | answer within {d['max_new_tokens']} tokens | answer first | n |",
                  "|---|---|---|---|---|"]
        for r in d["natural"]:
            lines.append(f"| `{r['frame']}` | {r['condition']} | {acc(r, 'anywhere', 'anywhere_lo', 'anywhere_hi')} | "
                         f"{acc(r, 'first', 'first_lo', 'first_hi')} | {r['n']} |")
        ex = [e for e in d["examples"] if e["condition"] == "IV"][:3]
        if ex:
            lines += ["", "Generations with the IV (the first three queries, first frame): " + "; ".join(
                f"{e['input']!r} -> {e['generated']!r} (answer {e['answer']!r})" for e in ex)]
        lines += ["", "Figures: " + ", ".join(fig_link(figs, d["figures"][k], k) for k in ("templates", "natural")), ""]
    return lines


def section_instruction(done: dict, tasks: list[str], figs: str) -> list[str]:
    lines = ["## Instruction-built against demonstration-built IVs", "",
             "`instruction_iv`: the mean head outputs of zero-shot prompts that carry the task's instruction "
             "(`<instruction>\\n\\nQ: x\\nA:`, kept when the model answers right), the heads ranked by patching "
             "those means into the same queries under a *wrong* instruction (\"Give the opposite of the word.\") or "
             "with *no* instruction, top 10 heads, layer and scale chosen on validation. Compared with the "
             "demonstration-built IV of the same task (`compare_ivs`): Jaccard overlap of the two top-10 head sets, "
             "cosine of the vectors, Spearman correlation of the two AIE maps, and each IV's zero-shot test top-1 "
             "at its own layer and scale.", "",
             f"Command: `ivkit anatomy instruction {MODEL} TASK --corrupt wrong --out DIR --against "
             "runs/anatomy/ivs/TASK`.", "",
             "| task | corrupted by | instruction prompts right | Jaccard (shared heads) | cosine | Spearman | "
             "instruction-built top-1 (layer, scale) | demonstration-built top-1 (layer, scale) | no vector |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        for c in ("wrong", "empty"):
            d = done.get(f"instruction_{t}_{c}")
            if d is None or "error" in d:
                lines.append(f"| {t} | {c} | not measured{': ' + d['error'] if d else ' yet'} | | | | | | |")
                continue
            s, rows = d["summary"], {r["name"]: r for r in d["rows"]}
            a, b, z = rows["instruction-built"], rows["demonstration-built"], rows["no vector"]
            f = d["filter"]
            lines.append(f"| {t} | {c} | {f.get('correct')} of {f.get('tried')} | {s['jaccard']:.2f} "
                         f"({' '.join(s['shared']) or 'none'}) | {s['cosine']:.3f} | {num(s.get('spearman'))} | "
                         f"{acc(a)} ({a['layer']}, {a['scale']:g}) | {acc(b)} ({b['layer']}, {b['scale']:g}) | {acc(z)} |")
    lines.append("")
    for t in tasks:
        d = done.get(f"instruction_{t}_wrong")
        if d and "error" not in d:
            lines.append(f"* {t}: instruction-built heads {' '.join(d['heads'])}; figure "
                         f"{fig_link(figs, d['figure'], 'instruction_' + t)}.")
    lines += ["", "`ivkit.extract(..., style=\"instruction\")` builds its mean head outputs from the same instruction "
              "prompts but ranks the heads on shuffled-label *demonstrations* (its corrupted prompts are 10-shot), "
              "so its ranking mixes the two kinds of prompt. Its IV against the demonstration-built one:", "",
              "| task | Jaccard (shared heads) | cosine | Spearman | its top-1 (layer, scale) | demonstration-built top-1 |",
              "|---|---|---|---|---|---|"]
    for t in tasks:
        d = done.get(f"extract_style_instruction_{t}")
        if d is None or "error" in d:
            lines.append(f"| {t} | not measured{': ' + d['error'] if d else ' yet'} | | | | |")
            continue
        s, rows = d["summary"], {r["name"]: r for r in d["rows"]}
        a, b = rows["extract style=instruction"], rows["demonstration-built"]
        lines.append(f"| {t} | {s['jaccard']:.2f} ({' '.join(s['shared']) or 'none'}) | {s['cosine']:.3f} | "
                     f"{num(s.get('spearman'))} | {acc(a)} ({a['layer']}, {a['scale']:g}) | {acc(b)} |")
    return lines + [""]


def section_limits(done: dict) -> list[str]:
    lines = ["## What this does not show", "",
             "* One model (de-quantised Q4_1 weights), one seed, three closely related letter-and-case tasks: the "
             "intervals are sampling intervals over test queries, not over seeds, prompts sets or models.",
             "* The baselines are *added* at the IV's norm (at the IV's layer, or at the layer the validation split "
             "picks for them); Hendel et al. substitute the hidden state, which is not what is measured here. The "
             "portability and natural-text rows use them at the IV's layer only.",
             "* The composed vector is the plain sum of two IVs (its norm is about the sum of theirs); only the "
             "scale sweep (1 to 4) adapts its size, no weighting of the terms was tried.",
             "* Natural-text scoring looks for the answer as a whole word, case-sensitive; a one-letter answer can "
             "match an unrelated word (the article \"a\"), so compare each row with the no-vector row of its frame."]
    few = []
    for n, d in done.items():
        if n.startswith("instruction_") and "filter" in d and (d["filter"].get("correct") or 0) < 125:
            few.append(f"{d['task']} ({d['filter']['correct']} of {d['filter']['tried']})")
    if few:
        lines.append("* The model answers few instruction prompts right, so the instruction-built IVs average the "
                     "head outputs of fewer than the 100 prompts asked for and their 25 corrupted trials reuse those "
                     "queries: " + ", ".join(sorted(set(few))) + ". Their weak zero-shot effect may come from "
                     "that as much as from the heads.")
    return lines + [""]


def section_summary(done: dict, tasks: list[str], instruction_tasks: list[str]) -> list[str]:
    out = []
    c = done.get("compose")
    if c and "error" not in c:
        rows = {r["name"]: r for r in c["rows"]}
        out.append(f"* Composition: `{c['formula']}` reaches {acc(rows['composed'])} on {c['target']}, whose own IV "
                   f"reaches {acc(rows['own IV'])} (zero-shot test top-1).")
    for t in tasks:
        b, f = done.get(f"baselines_{t}"), done.get(f"baselines_best_layer_{t}")
        if b and "error" not in b:
            rows = {r["name"]: r for r in b["rows"] + (f["rows"][1:] if f and "error" not in f else [])}
            best = rows.get("mean difference (layer and scale chosen)")
            extra = f"; the mean-difference vector at its own best layer {best['layer']}: {acc(best)}" if best else ""
            out.append(f"* {t}: IV {acc(rows['IV'])}; the baselines at the IV's layer and norm: "
                       f"{acc(rows['task vector (matched)'])} and {acc(rows['mean difference (matched)'])}{extra}.")
    for t in instruction_tasks:
        d = done.get(f"instruction_{t}_wrong")
        if d and "error" not in d:
            rows = {r["name"]: r for r in d["rows"]}
            out.append(f"* {t}, instruction-built (wrong-instruction corruption) against demonstration-built: "
                       f"top-10 Jaccard {d['summary']['jaccard']:.2f}, cosine {d['summary']['cosine']:.2f}, zero-shot "
                       f"top-1 {acc(rows['instruction-built'])} against {acc(rows['demonstration-built'])}.")
    return (["## In short", ""] + out + [""]) if out else []


def write_doc(out: Path, doc: Path, names: list[str], key: str, *, tasks: list[str], instruction_tasks: list[str],
              quick: bool = False) -> None:
    from ivkit.core.io import atomic_write_text

    done, missing = load_steps(out, names, key)
    m = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    fig_dir = doc.with_suffix("")
    fig_dir.mkdir(parents=True, exist_ok=True)
    for f in (out / "figures").glob("*.html") if (out / "figures").exists() else []:
        shutil.copyfile(f, fig_dir / f.name)
    figs = fig_dir.name
    lines = ["# What an instruction vector is made of", "",
             "Five questions about an IV on SmolLM2-135M-Instruct, each answered with `ivkit.analysis.anatomy_*` "
             "(Python) or `ivkit anatomy ...` (command line): which tokens it promotes, whether IVs add up, whether "
             "it survives other prompt templates and natural text, what it adds over plain residual-stream vectors, "
             "and whether an IV built from instructions uses the heads a demonstration-built one uses.", ""]
    lines += section_summary(done, list(tasks), list(instruction_tasks))
    lines += section_setup(m, done, missing, quick)
    lines += section_ivs(done, list(tasks))
    lines += section_decode(done, list(tasks), figs)
    lines += section_compose(done, figs)
    lines += section_baselines(done, list(tasks), figs)
    lines += section_portability(done, list(tasks), figs)
    lines += section_instruction(done, list(instruction_tasks), figs)
    lines += section_limits(done)
    atomic_write_text(doc, "\n".join(lines) + "\n")
