"""Floor 7: the extraction pipeline. One typed configuration (`ExtractConfig`), named
stages remembered in the run directory (`stages`), and `extract`."""

from .config import ExtractConfig
from .extract import Extraction, extract
from .greedy import GreedyPath, greedy_heads
from .prompts import ExtractionPrompts, filter_prompts, prepare_prompts

__all__ = ["ExtractConfig", "Extraction", "ExtractionPrompts", "GreedyPath", "extract", "filter_prompts",
           "greedy_heads", "prepare_prompts"]
