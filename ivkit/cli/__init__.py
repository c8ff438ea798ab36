"""The top floor: the ``ivkit`` command (`app`), whose ``extract`` options are built
from `ExtractConfig` (`options`)."""

from .app import app, main

__all__ = ["app", "main"]
