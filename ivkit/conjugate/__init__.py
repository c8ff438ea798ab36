"""Floor 9: conjugate prompting and implicit task inference on real models (Kotha et al., ICLR
2024), explained with instruction vectors.

* `transforms`: prompt transforms ``s`` / ``s^-1`` (Leetspeak, Pig Latin,
  word-level translation through a `Lexicon`, your own);
* `probe`: the in-context-versus-instruction probe, its files and scoring;
* `runner`: `conjugate`, every (model, transform) run, resumable;
* `results`: `ConjugateResult` and the recovery with its interval;
* `diagnose`: `diagnose`, alignment with the base model's IV and the
  effect of injecting it;
* `data`: the seeded data files the study writes;
* `cli`: the ``conjugate`` command.
"""

from .diagnose import Diagnosis, alignment, diagnose, extract_task_iv
from .lexicon import Coverage, Lexicon
from .probe import ProbeItem, ProbeRun, build_probe, load_probe_file, run_probe, score_output
from .results import ConjugateResult, Recovery, bootstrap_recovery
from .runner import conjugate
from .transforms import Transform, custom, get_transform, leetspeak, pig_latin, translation

__all__ = ["ConjugateResult", "Coverage", "Diagnosis", "Lexicon", "ProbeItem", "ProbeRun", "Recovery", "Transform",
           "alignment", "bootstrap_recovery", "build_probe", "conjugate", "custom", "diagnose", "extract_task_iv",
           "get_transform", "leetspeak", "load_probe_file", "pig_latin", "run_probe", "score_output", "translation"]
