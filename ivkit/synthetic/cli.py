"""``ivkit synthetic``: pretrain, fine-tune and study the in-context regression set-up.

A Typer sub-app (``app``); the ``ivkit`` command mounts it with
``app.add_typer(synthetic_app, name="synthetic")``. Every option is checked (by building the
settings objects) before any training starts; a bad value exits with status 2 and one line naming
the option and the fix.

For example:

    ivkit synthetic pretrain --out runs/syn/pretrain --steps 4000
    ivkit synthetic finetune --out runs/syn/finetune --init runs/syn/pretrain/checkpoint-4000
    ivkit synthetic study --out runs/syn            # everything, resumable
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import typer

from ..core.errors import InputError, IVKitError
from ..core.options import option_names
from .data import RegressionTask
from .model import ModelConfig
from .train import TrainConfig

app = typer.Typer(name="synthetic", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="In-context linear regression (Kotha et al.): pretrain on a mixture of priors, fine-tune on one, "
                       "measure the forgetting, the conjugate and the heads.")
log = logging.getLogger("ivkit.synthetic.cli")

FLAGS = {name: f"--{name.replace('_', '-')}" for name in (
    "dim", "n_points", "noise", "tau", "p_discrete", "n_discrete", "discrete_seed", "n_embd", "n_layer", "n_head", "steps",
    "batch_size",
    "lr", "warmup", "seed", "save_every", "points_start", "points_steps", "dims_steps", "threads", "n_test",
    "n_validation", "head_prompts", "top_k", "alphas")}

OUT = typer.Option(..., "--out", help="Run directory (resumed when it holds this run's checkpoints)")
THREADS = typer.Option(1, "--threads", help="Torch CPU threads (1 is fastest for these small models on a shared CPU)")
QUIET = typer.Option(False, "--quiet", "-q", help="Warnings only, no progress bars")


def _setup(quiet: bool, threads: int) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    import torch

    torch.set_num_threads(threads)


def _checked(build: Callable[[], Any]) -> Any:
    """Build settings; an `InputError` becomes a usage error (exit 2) before any work."""
    try:
        with option_names(FLAGS):
            return build()
    except InputError as e:
        raise typer.BadParameter(str(e)) from None


def _run(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume from the last checkpoint", err=True)
        raise typer.Exit(130) from None
    except IVKitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def _threads(threads: int) -> int:
    if threads < 1:
        raise typer.BadParameter(f"--threads must be at least 1, got {threads}")
    return threads


@app.command("pretrain")
def pretrain_cmd(
    out: Path = OUT,
    dim: int = typer.Option(4, help="Dimension of x and w"),
    n_points: int = typer.Option(41, help="Pairs per prompt (0 to n_points - 1 in-context examples)"),
    noise: float = typer.Option(1.0, help="Label noise standard deviation sigma"),
    tau: float = typer.Option(1.0, help="Standard deviation of each coordinate of w"),
    p_discrete: float = typer.Option(0.5, help="Probability of the discrete prior in the pretraining mixture"),
    n_discrete: int = typer.Option(64, help="Size of the discrete set of weight vectors"),
    discrete_seed: int = typer.Option(0, help="Seed of the fixed discrete set"),
    n_embd: int = typer.Option(64, help="Residual width"),
    n_layer: int = typer.Option(4, help="GPT-2 blocks"),
    n_head: int = typer.Option(4, help="Heads per block"),
    steps: int = typer.Option(4000, help="Optimizer steps"),
    batch_size: int = typer.Option(32, help="Prompts per step"),
    lr: float = typer.Option(1e-3, help="Peak learning rate (cosine decay to 10%)"),
    points_steps: int = typer.Option(3000, help="Steps of the prompt-length curriculum (0: none)"),
    dims_steps: int = typer.Option(1200, help="Steps of the dimension curriculum (0: none)"),
    seed: int = typer.Option(0, help="Seed of the weights and batches"),
    save_every: int = typer.Option(500, help="Checkpoint every this many steps"),
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Pretrain on the mixture of the discrete and the continuous prior."""
    from .train import pretrain

    task = _checked(lambda: RegressionTask(dim=dim, n_points=n_points, noise=noise, tau=tau, p_discrete=p_discrete,
                                           n_discrete=n_discrete, discrete_seed=discrete_seed))
    model = _checked(lambda: ModelConfig(dim=dim, n_points=n_points, n_embd=n_embd, n_layer=n_layer, n_head=n_head))
    cfg = _checked(lambda: TrainConfig(steps=steps, batch_size=batch_size, lr=lr, points_steps=points_steps,
                                       dims_steps=dims_steps, seed=seed, save_every=save_every))
    _setup(quiet, _threads(threads))
    run = _run(lambda: pretrain(out, task, model, cfg, progress=not quiet))
    typer.echo(repr(run))
    typer.echo(f"final checkpoint: {run.final}")


@app.command("finetune")
def finetune_cmd(
    out: Path = OUT,
    init: Path = typer.Option(..., "--init", help="A pretraining checkpoint folder (OUT/checkpoint-<step>)"),
    steps: int = typer.Option(500, help="Optimizer steps"),
    batch_size: int = typer.Option(32, help="Prompts per step"),
    lr: float = typer.Option(1e-3, help="Learning rate (constant after 20 warm-up steps)"),
    seed: int = typer.Option(0, help="Seed of the batches"),
    save_every: int = typer.Option(100, help="Checkpoint every this many steps"),
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Fine-tune a pretrained checkpoint on the discrete prior only (the task is read from it)."""
    from .train import finetune

    cfg = _checked(lambda: TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=min(20, steps), schedule="constant",
                                       points_steps=0, dims_steps=0, seed=seed, save_every=save_every))
    if not init.is_dir():
        raise typer.BadParameter(f"--init {init} is not a folder: pass a pretraining run's checkpoint-<step> folder")
    _setup(quiet, _threads(threads))
    run = _run(lambda: finetune(out, init, None, cfg, progress=not quiet))
    typer.echo(repr(run))
    typer.echo(f"final checkpoint: {run.final}")


@app.command("study")
def study_cmd(
    out: Path = OUT,
    pretrain_steps: int = typer.Option(16000, help="Pretraining steps (no curriculum)"),
    noise: float = typer.Option(0.25, help="Label noise standard deviation sigma"),
    n_discrete: int = typer.Option(8, help="Size of the discrete set of weight vectors"),
    finetune_steps: int = typer.Option(500, help="Fine-tuning steps"),
    finetune_lr: float = typer.Option(1e-3, help="Fine-tuning learning rate (constant)"),
    n_test: int = typer.Option(2000, help="Test prompts per prior"),
    n_validation: int = typer.Option(1000, help="Validation prompts (choosing alpha and the heads)"),
    alphas: str = typer.Option("0.5,1,1.5,2,3", help="Comma-separated label scales of the conjugate (must include 1)"),
    head_prompts: int = typer.Option(500, help="Prompts per prior for ranking heads and the recovery test"),
    top_k: int = typer.Option(3, help="Heads patched from the pretrained model"),
    seed: int = typer.Option(0, help="Seed of everything"),
    figures: bool = typer.Option(True, help="Write the figures as HTML into OUT/figures"),
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Pretrain, fine-tune, measure forgetting, the conjugate and the heads (resumable)."""
    from .study import STUDY_PRETRAIN, STUDY_TASK, StudyConfig, run_study

    try:
        values = tuple(float(a) for a in alphas.split(",") if a.strip())
    except ValueError:
        raise typer.BadParameter(f"--alphas must be comma-separated numbers, got {alphas!r}") from None
    cfg = _checked(lambda: StudyConfig(
        task=replace(STUDY_TASK, noise=noise, n_discrete=n_discrete),
        pretrain=replace(STUDY_PRETRAIN, steps=pretrain_steps, seed=seed),
        finetune=TrainConfig(steps=finetune_steps, lr=finetune_lr, warmup=min(20, finetune_steps), schedule="constant",
                             points_steps=0, dims_steps=0, seed=seed, save_every=100),
        n_test=n_test, n_validation=n_validation, alphas=values, head_prompts=head_prompts, top_k=top_k, seed=seed))
    _setup(quiet, _threads(threads))
    res = _run(lambda: run_study(out, cfg, progress=not quiet))
    for part in (res.pretrain, res.finetune, res.curves, res.distance, res.conjugate, res.distance_bayes,
                 res.conjugate_bayes, res.implied, res.ranking_pretrained, res.ranking_finetuned, res.change, res.recovery):
        typer.echo(repr(part))
    if figures:
        from ..core.plots import to_html

        for name in ("curves", "distance", "conjugate", "distance_bayes", "conjugate_bayes", "implied", "ranking_pretrained",
                     "ranking_finetuned", "change", "recovery"):
            to_html(getattr(res, name).plot(), out / "figures" / f"{name}.html", self_contained=False)
        typer.echo(f"figures: {out / 'figures'}")
