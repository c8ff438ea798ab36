"""The top floor: the ``ivkit`` command (:mod:`~ivkit.cli.app`), whose ``extract`` options are built
from :class:`~ivkit.ExtractConfig` (:mod:`~ivkit.cli.options`)."""

from .app import app, main

__all__ = ["app", "main"]
