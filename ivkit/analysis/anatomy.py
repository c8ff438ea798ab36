"""What an instruction vector is made of: one import for the anatomy analyses.

* ``decode_vector``, ``logit_lens``, ``top_token_reconstruction``: the tokens an IV promotes and
  suppresses, per layer, and how few of them carry its effect (`anatomy_decode`)
* ``compose``, ``iv_sum``, ``iv_difference``, ``iv_scaled``, ``compare_composition``: arithmetic on
  IVs of one model, and a composed IV against a task's own (`anatomy_compose`)
* ``portability``, ``natural_text``, ``TEMPLATES``, ``SENTENCE_FRAMES``: other prompt templates,
  free generation (`anatomy_port`)
* ``baseline_vectors``, ``iv_with_baselines``, ``baselines_at_best_layer``: the task vector and the
  mean-difference vector beside the IV (`anatomy_baselines`)
* ``instruction_iv``, ``compare_ivs``: IVs built from instructions, compared with
  demonstration-built ones (`anatomy_instruction`)
* ``choose_and_test``: any vectors: layer and scale chosen on validation, top-1 on test
  (`anatomy_common`)

Example:

    from ivkit.analysis.anatomy import decode_vector, compose, compare_composition
    cap, low = ivkit.InstructionVector.load("runs/cap"), ivkit.InstructionVector.load("runs/low")
    print(decode_vector(model, cap))
    both = compose([(1.0, low), (1.0, cap)])
    print(compare_composition(model, "capitalize_first_letter", both, own_iv))
"""

from .anatomy_baselines import BaselineVectors, baseline_vectors, baselines_at_best_layer, iv_with_baselines
from .anatomy_common import VectorScores, choose_and_test, zero_shot_prompts
from .anatomy_compose import CompositionResult, compare_composition, compose, iv_difference, iv_scaled, iv_sum
from .anatomy_decode import (
    Decoding,
    LogitLens,
    Reconstruction,
    decode_vector,
    direct_logits,
    logit_lens,
    readout_projection,
    top_token_reconstruction,
)
from .anatomy_instruction import IVComparison, compare_ivs, default_wrong_instruction, instruction_iv
from .anatomy_port import SENTENCE_FRAMES, TEMPLATES, NaturalText, Portability, answer_in_text, natural_text, portability

__all__ = ["SENTENCE_FRAMES", "TEMPLATES", "BaselineVectors", "CompositionResult", "Decoding", "IVComparison",
           "LogitLens", "NaturalText", "Portability", "Reconstruction", "VectorScores", "answer_in_text",
           "baseline_vectors", "baselines_at_best_layer", "choose_and_test", "compare_composition", "compare_ivs", "compose",
           "decode_vector", "default_wrong_instruction", "direct_logits", "instruction_iv", "iv_difference",
           "iv_scaled", "iv_sum", "iv_with_baselines", "logit_lens", "natural_text", "portability",
           "readout_projection", "top_token_reconstruction", "zero_shot_prompts"]
