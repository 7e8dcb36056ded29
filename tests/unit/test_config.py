"""The params schema: every profile validates; bad params give one clear line naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from r1_pipeline.config import (
    PROFILES_DIR,
    Config,
    ConfigError,
    apply_overrides,
    describe,
    load_config,
    profile_dict,
    validate,
)
from tests.conftest import ROOT, stage_env

PROFILES = ["tiny"] + sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_validates(name):
    cfg = load_config(profile=name)
    assert isinstance(cfg, Config)


def test_required_profiles_exist():
    assert {"tiny", "gpu", "micro", "qwen2.5-math-1.5b-r1"} <= set(PROFILES)
    real = load_config(profile="qwen2.5-math-1.5b-r1")
    assert real.base.source == "pretrained" and real.grpo.use_vllm


def test_params_yaml_is_the_tiny_profile():
    assert load_config(ROOT / "params.yaml") == load_config(profile="tiny")


def test_every_field_has_help_text():
    missing = [key for key, _, help_ in describe() if not help_.strip()]
    assert missing == []


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate(raw, "params.yaml", ROOT)
    return str(exc.value)


def test_unknown_key_names_the_path():
    raw = profile_dict("tiny")
    raw["grpo"]["learning_rat"] = 1e-5
    assert _error(raw) == "params.yaml: grpo.learning_rat: unknown key (misspelled?)"


def test_wrong_type_names_the_path():
    raw = profile_dict("tiny")
    raw["sft"]["per_device_train_batch_size"] = "lots"
    msg = _error(raw)
    assert msg.startswith("params.yaml: sft.per_device_train_batch_size: ") and "'lots'" in msg
    assert len(msg.splitlines()) == 1


def test_negative_learning_rate_is_out_of_range():
    raw = apply_overrides(profile_dict("tiny"), ["grpo.learning_rate=-0.001"])
    assert _error(raw) == "params.yaml: grpo.learning_rate: Input should be greater than 0 (got -0.001)"


def test_missing_data_file():
    raw = profile_dict("tiny")
    raw["data"]["eval_sets"] = [{"name": "x", "type": "jsonl", "path": "nowhere/x.jsonl"}]
    assert _error(raw) == "params.yaml: data.eval_sets[0].path: file not found: nowhere/x.jsonl"


def test_cross_field_checks():
    raw = apply_overrides(
        profile_dict("tiny"), ["grpo.reward_funcs=[accuracy, nonsense]", "grpo.reward_weights=[1, 1]"]
    )
    assert "grpo: " in _error(raw) and "unknown reward_funcs ['nonsense']" in _error(raw)
    raw = apply_overrides(profile_dict("tiny"), ["grpo.reward_weights=[1.0]"])
    assert "reward_weights has 1 entries for 2 reward_funcs" in _error(raw)
    raw = apply_overrides(profile_dict("tiny"), ["grpo.num_generations=7"])
    assert "must be divisible by num_generations (7)" in _error(raw)


def test_r1_zero_is_grpo_updated_by_its_overlay():
    raw = apply_overrides(profile_dict("micro"), ["grpo.beta=0.1", "grpo.temperature=0.9", "r1_zero.temperature=0.5"])
    cfg = validate(raw, "params.yaml", ROOT)
    assert (cfg.r1_zero.beta, cfg.r1_zero.temperature, cfg.r1_zero.max_steps) == (0.1, 0.5, 2)  # micro: 2
    assert cfg.model_dump(mode="json")["r1_zero"] == {
        "enabled": True,
        "max_steps": 2,
        "temperature": 0.5,
        "log_completions_steps": 1,
    }
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["r1_zero"] == {"enabled": True}


@pytest.mark.parametrize("name", PROFILES)
def test_the_written_overlay_gives_the_same_config(name):
    cfg = load_config(profile=name)
    assert validate(cfg.model_dump(mode="json"), "params.yaml", ROOT) == cfg


def test_an_r1_zero_error_names_r1_zero():
    raw = apply_overrides(profile_dict("tiny"), ["r1_zero.learning_rate=-1"])
    assert _error(raw) == "params.yaml: r1_zero.learning_rate: Input should be greater than 0 (got -1)"
    raw = apply_overrides(profile_dict("tiny"), ["r1_zero.betaa=1"])
    assert _error(raw) == "params.yaml: r1_zero.betaa: unknown key (misspelled?)"
    raw = apply_overrides(profile_dict("tiny"), ["grpo.learning_rate=-1"])  # once, under grpo
    assert _error(raw) == "params.yaml: grpo.learning_rate: Input should be greater than 0 (got -1)"


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("project:\n  seed: 1\n data: [\n")
    with pytest.raises(ConfigError, match=r"params.yaml: line \d+: invalid YAML"):
        load_config(p)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["grpo.beta"])
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"grpo": 3}, ["grpo.beta=0.1"])


def test_stage_with_bad_param_exits_2_with_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(profile_dict("micro")))
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.sft", "--set", "sft.learning_rate=-1"],
        cwd=tmp_path,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: params.yaml: sft.learning_rate: Input should be greater than 0 (got -1)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
