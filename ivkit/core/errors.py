"""Exceptions raised by ivkit.

Every error names the problem and the fix in its message, so that the CLI can print it as one
readable line. Catch `IVKitError` to catch all of them.
"""

from __future__ import annotations


class IVKitError(Exception):
    """Base class of every error ivkit raises on bad input."""


class InputError(IVKitError, ValueError):
    """An argument is out of range or of the wrong kind (a layer the model does not have, an
    unknown metric, no prompts, ...). Also a `ValueError`."""


class ModelLoadError(IVKitError):
    """A model name, path or object could not be loaded."""


class UnknownArchitectureError(IVKitError):
    """The model's architecture is not in ivkit's table (see `ivkit.register_architecture`)."""


class TaskError(IVKitError):
    """A task file or task name is unusable: missing, empty or malformed."""


class AnswerTokenError(TaskError):
    """An answer has no usable first token under the model's tokenizer."""


class IncompatibleVectorError(IVKitError):
    """An instruction vector was built on a model whose geometry or architecture differs."""


class ArtifactError(IVKitError):
    """A saved artifact (an IV directory, an effects file) is missing or malformed."""


class BackendError(IVKitError):
    """A backend cannot do what was asked (an architecture, a method, a model form it does not
    support), or its library is missing."""
