"""One typed configuration: every option checked once, in one place, shared by the API and the CLI;
a mistyped option is an error, not silently ignored."""

import dataclasses

import pytest

from ivkit import ExtractConfig, InputError, extract, indirect_effects, mean_head_activations
from ivkit.cli.options import flag

from ..conftest import prompts_of_mixed_lengths


def test_a_mistyped_option_is_an_error_naming_the_closest_one(tiny_llama, task_file):
    with pytest.raises(InputError, match="extract has no option 'top_kk'; did you mean 'top_k'"):
        extract(tiny_llama, str(task_file), top_kk=3)
    corrupted = prompts_of_mixed_lengths(tiny_llama, n=2, style="shuffled")
    means = mean_head_activations(tiny_llama, prompts_of_mixed_lengths(tiny_llama, n=2), progress=False)
    with pytest.raises(InputError, match="method='fast' has no option 'prompts_per_pas'; did you mean 'prompts_per_pass'"):
        indirect_effects(tiny_llama, corrupted, means, method="fast", prompts_per_pas=2, progress=False)
    with pytest.raises(InputError, match="method='naive' has no option 'batch_size'"):
        indirect_effects(tiny_llama, corrupted, means, method="naive", batch_size=2, progress=False)


def test_the_config_is_checked_on_construction_and_immutable():
    cfg = ExtractConfig(top_k=(10, 3, 3), scales=[1, 2])
    assert cfg.top_k == (3, 10) and cfg.scales == (1.0, 2.0) and cfg.ks == (3, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.shots = 5
    with pytest.raises(InputError, match="unknown ranking 'zeroshot'.*did you mean 'zero_shot'"):
        ExtractConfig(ranking="zeroshot")
    assert ExtractConfig(ranking="both").rankings == ("shuffled", "zero_shot")
    assert ExtractConfig(layer=4).sweeps is False and ExtractConfig().sweeps is True
    d = ExtractConfig().to_dict()
    assert d["template"]["query"] == "Q: {input}\nA:" and d["scales"] == [1.0, 2.0, 3.0, 4.0]


def test_the_cli_builds_extracts_options_from_the_config():
    from typer.testing import CliRunner

    from ivkit.cli import app

    out = CliRunner().invoke(app, ["extract", "--help"], env={"COLUMNS": "200"}).output
    for f in dataclasses.fields(ExtractConfig):
        if f.metadata.get("cli") != "":
            assert flag(f) in out, f"--help lacks {flag(f)}"
    assert "(one of: top_k, greedy)" in out and "--no-filter" in out and "--template" not in out
