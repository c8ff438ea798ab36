"""The ``anatomy`` commands: what an instruction vector is made of.

    ivkit anatomy decode MODEL --iv DIR [--task TASK]          # top tokens, logit lens, top-N reconstruction
    ivkit anatomy compose MODEL --iv A --iv B [--coef 1 --coef -1] --out DIR [--task T --own DIR]
    ivkit anatomy portability MODEL TASK --iv DIR              # other templates, natural text, baselines
    ivkit anatomy baselines MODEL TASK --iv DIR                # task vector and mean difference beside the IV
    ivkit anatomy instruction MODEL TASK --out DIR [--instruction TEXT] [--corrupt wrong|empty] [--against DIR]

With ``--out DIR`` each command writes ``DIR/<command>.json`` (every number), ``.csv`` tables and
``.html`` figures (plotly.js from its CDN). Every option is checked before the model loads.
Run it as ``ivkit anatomy ...`` (the main command mounts this app).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..core.errors import InputError
from ..core.io import atomic_write_json, atomic_write_text
from ..core.options import check_at_least, check_choice
from ..core.plots import to_html
from ..mediation import IndirectEffects
from ..models.loading import load_model
from ..vectors import InstructionVector
from .anatomy_baselines import baseline_vectors, baselines_at_best_layer, iv_with_baselines
from .anatomy_common import VectorScores, zero_shot_prompts
from .anatomy_compose import compare_composition, compose
from .anatomy_decode import decode_vector, logit_lens, top_token_reconstruction
from .anatomy_instruction import Corruption, compare_ivs, instruction_iv
from .anatomy_port import natural_text, portability

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="What an instruction vector is made of: decode, compose, portability, baselines, "
                       "instruction-built IVs.")
log = logging.getLogger("ivkit.analysis.anatomy_cli")

OUT_HELP = "write <command>.json, .csv tables and .html figures here"


def _setup(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"


def _iv_dir(path: str) -> Path:
    p = Path(path)
    if not (p / "iv.json").exists():
        raise typer.BadParameter(f"{p} holds no iv.json: give a directory written by ivkit extract")
    return p


def _load_iv(path: Path, model: Any) -> InstructionVector:
    iv = InstructionVector.load(path, model)
    return iv.replace(meta={"source": str(path)})


def _write(out: Optional[Path], name: str, data: dict[str, Any], frames: dict[str, Any], figs: dict[str, Any]) -> None:
    if out is None:
        return
    atomic_write_json(out / f"{name}.json", data)
    for key, df in frames.items():
        atomic_write_text(out / f"{key}.csv", df.to_csv(index=False))
    for key, fig in figs.items():
        to_html(fig, out / f"{key}.html", self_contained=False)
    typer.echo(f"wrote {out}/{name}.json and {len(frames)} table(s), {len(figs)} figure(s)")


def _check(fn, *args) -> Any:
    try:
        return fn(*args)
    except InputError as e:
        raise typer.BadParameter(str(e)) from None


@app.command("decode")
def decode_cmd(model: str = typer.Argument(..., help="model name, path or alias"),
               iv: str = typer.Option(..., "--iv", help="an IV directory (ivkit extract --out)"),
               top: int = typer.Option(10, help="tokens promoted and suppressed"),
               task: Optional[str] = typer.Option(None, help="with a task: the logit lens on its zero-shot test "
                                                             "prompts and the top-N reconstruction"),
               n: int = typer.Option(100, help="test queries for the lens and the reconstruction"),
               out: Optional[Path] = typer.Option(None, help=OUT_HELP),
               quiet: bool = typer.Option(False, "--quiet", "-q")):
    """The tokens an IV promotes and suppresses; with --task, per layer (logit lens) and how few top
    tokens carry its effect."""
    _setup(quiet)
    _check(check_at_least, "--top", top, 1)
    _check(check_at_least, "--n", n, 1)
    path = _iv_dir(iv)
    ivm = load_model(model)
    vec = _load_iv(path, ivm)
    dec = decode_vector(ivm, vec, top=top)
    typer.echo(repr(dec))
    data: dict[str, Any] = {"promoted": dec.promoted, "suppressed": dec.suppressed}
    frames, figs = {"decode": dec.to_pandas()}, {"decode": dec.plot()}
    if task is not None:
        seed = int(vec.meta.get("seed") or 0)
        prompts = zero_shot_prompts(ivm, task, "test", n=n, seed=seed)
        lens = logit_lens(ivm, vec, prompts)
        typer.echo(repr(lens))
        data["lens"] = lens.to_pandas().to_dict(orient="records")
        frames["lens"], figs["lens"] = lens.to_pandas(), lens.plot()
        if vec.layer is not None:
            rec = top_token_reconstruction(ivm, vec, prompts)
            typer.echo(repr(rec))
            data["reconstruction"] = rec.rows
            frames["reconstruction"], figs["reconstruction"] = rec.to_pandas(), rec.plot()
    _write(out, "decode", data, frames, figs)


def _coefs(ivs: List[str], coef: Optional[List[float]]) -> List[float]:
    if not coef:
        return [1.0] * len(ivs)
    if len(coef) != len(ivs):
        raise typer.BadParameter(f"give one --coef per --iv ({len(ivs)}), got {len(coef)}")
    return list(coef)


@app.command("compose")
def compose_cmd(model: str = typer.Argument(..., help="model name, path or alias"),
                iv: List[str] = typer.Option(..., "--iv", help="IV directories to combine (repeat)"),
                coef: Optional[List[float]] = typer.Option(None, "--coef", help="one coefficient per --iv "
                                                                                "(default 1 each)"),
                out: Path = typer.Option(..., help="where the composed IV is saved"),
                name: Optional[str] = typer.Option(None, help="the composed IV's task name (default: the formula)"),
                task: Optional[str] = typer.Option(None, help="measure it on this task against --own"),
                own: Optional[str] = typer.Option(None, help="the task's own IV directory"),
                scales: str = typer.Option("1,2,3,4", help="scales the validation sweep tries"),
                quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Sum, difference or multiples of IVs of one model, saved as an IV; with --task, zero-shot test
    accuracy of it, of --own and of each term (layer and scale chosen on validation for each)."""
    _setup(quiet)
    coefs = _coefs(iv, coef)
    paths = [_iv_dir(p) for p in iv]
    own_path = _iv_dir(own) if own else None
    scale_list = _scales(scales)
    ivm = load_model(model)
    terms = [_load_iv(p, ivm) for p in paths]
    composed = compose(list(zip(coefs, terms)), name=name)
    composed.save(out)
    typer.echo(f"composed {composed.meta['composition']['formula']} (norm {composed.norm:.3f}) -> {out}")
    if task is not None:
        res = compare_composition(ivm, task, composed, _load_iv(own_path, ivm) if own_path else None, parts=terms,
                                  scales=scale_list)
        typer.echo(repr(res))
        _write(out, "compose", {"formula": res.formula, "cosines": res.cosines, "rows": res.scores.rows},
               {"compose": res.to_pandas()}, {"compose": res.plot()})


def _scales(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"--scales: expected comma-separated numbers, got {text!r}") from None
    if not out:
        raise typer.BadParameter("--scales needs at least one number")
    return out


@app.command("baselines")
def baselines_cmd(model: str = typer.Argument(...), task: str = typer.Argument(...),
                  iv: str = typer.Option(..., "--iv", help="the task's IV directory"),
                  n: int = typer.Option(50, help="training queries averaged for the baselines"),
                  best_layer: bool = typer.Option(True, "--best-layer/--no-best-layer", help="also each baseline at "
                                                  "the layer and scale the validation split chooses (IV's norm)"),
                  out: Optional[Path] = typer.Option(None, help=OUT_HELP),
                  quiet: bool = typer.Option(False, "--quiet", "-q")):
    """The IV beside the task vector (mean few-shot residual) and the mean-difference vector, at the
    IV's layer and norm (and, with --best-layer, at their own best layer): zero-shot test top-1."""
    _setup(quiet)
    _check(check_at_least, "--n", n, 1)
    path = _iv_dir(iv)
    ivm = load_model(model)
    vec = _load_iv(path, ivm)
    base = baseline_vectors(ivm, task, n=n, seed=int(vec.meta.get("seed") or 0))
    res = iv_with_baselines(ivm, task, vec, base, seed=int(vec.meta.get("seed") or 0))
    if best_layer:
        free = baselines_at_best_layer(ivm, task, vec, base, seed=int(vec.meta.get("seed") or 0))
        res = VectorScores(res.task, res.rows + free.rows[1:])
    typer.echo(repr(res))
    _write(out, "baselines", {"rows": res.rows, "cosine_mean_difference_per_layer": base.cosines(vec)},
           {"baselines": res.to_pandas()}, {"baselines": res.plot()})


def _matched_baselines(ivm: Any, task: str, vec: InstructionVector, n: int) -> dict[str, Any]:
    if vec.layer is None:
        log.warning("the IV has no residual layer (heads injection): no baselines beside it")
        return {}
    base = baseline_vectors(ivm, task, n=n, seed=int(vec.meta.get("seed") or 0))
    return base.at(vec.layer, norm=vec.norm)


@app.command("portability")
def portability_cmd(model: str = typer.Argument(...), task: str = typer.Argument(...),
                    iv: str = typer.Option(..., "--iv", help="the task's IV directory"),
                    n: int = typer.Option(100, help="test queries per template"),
                    natural: bool = typer.Option(True, "--natural/--no-natural", help="also free generation from "
                                                                                     "sentence prompts"),
                    natural_n: int = typer.Option(50, help="test queries per sentence frame"),
                    max_new_tokens: int = typer.Option(8, help="the answer must appear within this many tokens"),
                    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="also the task vector "
                                                   "and mean-difference vector at the IV's layer and norm"),
                    baseline_n: int = typer.Option(50, help="training queries averaged for the baselines"),
                    out: Optional[Path] = typer.Option(None, help=OUT_HELP),
                    quiet: bool = typer.Option(False, "--quiet", "-q")):
    """The IV under the shipped prompt templates (its own layer and scale), and in natural text."""
    _setup(quiet)
    for flag_name, value in (("--n", n), ("--natural-n", natural_n), ("--max-new-tokens", max_new_tokens),
                             ("--baseline-n", baseline_n)):
        _check(check_at_least, flag_name, value, 1)
    path = _iv_dir(iv)
    ivm = load_model(model)
    vec = _load_iv(path, ivm)
    extra = _matched_baselines(ivm, task, vec, baseline_n) if baselines else {}
    port = portability(ivm, task, vec, n=n, vectors=extra)
    typer.echo(repr(port))
    data: dict[str, Any] = {"templates": port.rows}
    frames, figs = {"portability": port.to_pandas()}, {"portability": port.plot()}
    if natural:
        nat = natural_text(ivm, task, vec, n=natural_n, max_new_tokens=max_new_tokens, vectors=extra)
        typer.echo(repr(nat))
        data.update(natural=nat.rows, examples=nat.examples)
        frames["natural_text"], figs["natural_text"] = nat.to_pandas(), nat.plot()
    _write(out, "portability", data, frames, figs)


@app.command("instruction")
def instruction_cmd(model: str = typer.Argument(...), task: str = typer.Argument(...),
                    out: Path = typer.Option(..., help="the instruction-built IV's directory (a rerun resumes)"),
                    instruction: Optional[str] = typer.Option(None, help="the task's instruction (default: "
                                                                         "the built-in one)"),
                    corrupt: str = typer.Option("wrong", help="corrupted prompts: wrong (another task's "
                                                              "instruction) or empty (no instruction)"),
                    wrong_instruction: Optional[str] = typer.Option(None, help="the wrong instruction"),
                    k: int = typer.Option(10, help="heads in the vector"),
                    against: Optional[str] = typer.Option(None, help="a demonstration-built IV of the task to "
                                                                     "compare with"),
                    quiet: bool = typer.Option(False, "--quiet", "-q")):
    """An IV built from instruction prompts (corrupted by a wrong or empty instruction); with
    --against, head overlap, cosine and zero-shot effect beside a demonstration-built IV."""
    _setup(quiet)
    _check(check_choice, "--corrupt", corrupt, Corruption)
    _check(check_at_least, "--k", k, 1)
    against_path = _iv_dir(against) if against else None
    ivm = load_model(model)
    res = instruction_iv(ivm, task, instruction=instruction, corrupt=corrupt, wrong_instruction=wrong_instruction,
                         k=k, out=out, progress=not quiet)
    typer.echo(repr(res))
    if against_path is not None:
        aie = against_path / "indirect_effects.json"
        effects = (res.effects, IndirectEffects.load(aie)) if aie.exists() else None
        cmp = compare_ivs(ivm, task, res.iv, _load_iv(against_path, ivm), effects=effects,
                          seed=int(res.iv.meta.get("seed") or 0))
        typer.echo(repr(cmp))
        _write(out, "instruction", {"summary": cmp.summary(), "rows": cmp.scores.rows},
               {"instruction": cmp.to_pandas()}, {"instruction": cmp.plot()})
