"""Floor 5: the instruction vector, built from mean head activations and a head ranking, saved,
loaded and injected (`InstructionVector`)."""

from .iv import INJECTIONS, InstructionVector, head_contributions, random_like

__all__ = ["INJECTIONS", "InstructionVector", "head_contributions", "random_like"]
