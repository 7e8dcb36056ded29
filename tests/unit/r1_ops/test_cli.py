"""The `r1` command line (r1_ops.cli): `config show` / `config use` with profiles and overrides, help on every
command, unknown names rejected with the known ones."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from r1_ops.cli import STAGES, app
from r1_pipeline.config import load_config

runner = CliRunner()


def test_config_show_applies_profile_and_overrides():
    result = runner.invoke(app, ["config", "show", "--profile", "gpu", "--set", "grpo.beta=0.0"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["project"]["precision"] == "bf16" and shown["grpo"]["beta"] == 0.0


def test_config_use_writes_a_valid_params_file(tmp_path):
    target = tmp_path / "params.yaml"
    result = runner.invoke(app, ["config", "use", "micro", "--params", str(target), "--set", "grpo.max_steps=2"])
    assert result.exit_code == 0, result.output
    cfg = load_config(target)
    assert cfg.grpo.max_steps == 2 and cfg.base.hidden_size == 64


def test_config_use_rejects_bad_override_and_keeps_the_file(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text("keep me")
    result = runner.invoke(app, ["config", "use", "micro", "--params", str(target), "--set", "sft.max_steps=-5"])
    assert result.exit_code == 2
    assert target.read_text() == "keep me"


def test_unknown_profile_lists_the_known_ones():
    result = runner.invoke(app, ["config", "show", "--profile", "nope"])
    assert result.exit_code == 2 and "unknown profile 'nope'; known profiles:" in result.output


@pytest.mark.parametrize("command", [[], ["config"], ["config", "show"], ["config", "use"], ["verify"], ["stage"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_unknown_stage_is_rejected():
    result = runner.invoke(app, ["stage", "nope"])
    assert result.exit_code == 2 and "unknown stage 'nope'" in result.output and ", ".join(STAGES) in result.output
