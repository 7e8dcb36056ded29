"""The mapping from params sections to TRL's config classes (r1_pipeline.training.trl_args).

A section field reaches TRL under its own name; the exceptions are listed once (PIPELINE_ONLY, TRANSLATED).
These tests fail when a new section field is none of the three, when TRL renames a field underneath us, and
when a value does not arrive.
"""

from __future__ import annotations

import pytest
from trl import DistillationConfig, GRPOConfig, SFTConfig

from r1_pipeline.config import Config, DistillParams, GRPOParams, R1ZeroParams, SFTParams, load_config
from r1_pipeline.errors import StageError
from r1_pipeline.training import PIPELINE_ONLY, TRANSLATED, trl_args, trl_field_names, trl_kwargs, unmapped_fields

# (params section, the TRL class its stage builds, fields that class does not take on purpose) as the stages
# call trl_args: tasks/sft.py, r1_pipeline/grpo.py (grpo and r1_zero), tasks/distill.py (both methods)
TARGETS = [
    ("sft", SFTParams, SFTConfig, ()),
    ("grpo", GRPOParams, GRPOConfig, ()),
    ("r1_zero", R1ZeroParams, GRPOConfig, ()),
    ("distill", DistillParams, SFTConfig, ()),
    ("distill", DistillParams, DistillationConfig, ("max_length",)),
]
IDS = [f"{stage}-{trl_class.__name__}" for stage, _, trl_class, _ in TARGETS]


def tiny(*overrides: str) -> Config:
    return load_config(profile="tiny", overrides=list(overrides))


@pytest.mark.parametrize("stage, section_class, trl_class, unused", TARGETS, ids=IDS)
def test_every_section_field_is_a_trl_field_or_listed(stage, section_class, trl_class, unused):
    assert unmapped_fields(trl_class, section_class, unused) == [], (
        f"{section_class.__name__} fields with no {trl_class.__name__} field of the same name: add them to "
        "PIPELINE_ONLY or TRANSLATED in r1_pipeline/training.py (or TRL renamed them)"
    )


@pytest.mark.parametrize("stage, section_class, trl_class, unused", TARGETS, ids=IDS)
def test_translations_and_run_wide_kwargs_name_real_trl_field_names(stage, section_class, trl_class, unused):
    """A TRL rename of a translated target (warmup_steps, epsilon_high, ...) or of a run-wide setting
    (output_dir, seed, report_to, ...) fails here, not as a silently ignored value."""
    names = trl_field_names(trl_class)
    targets = [TRANSLATED[f] for f in section_class.model_fields if f in TRANSLATED]
    assert [t for t in targets if t not in names] == []
    cfg = tiny()
    kwargs = trl_kwargs(trl_class, getattr(cfg, stage), cfg, stage, report=False, unused=unused)
    assert sorted(set(kwargs) - names) == []
    assert isinstance(trl_args(trl_class, getattr(cfg, stage), cfg, stage, report=False, unused=unused), trl_class)


def test_the_lists_name_real_section_fields():
    """PIPELINE_ONLY and TRANSLATED do not keep names the schema dropped."""
    fields = {f for cls in (SFTParams, GRPOParams, DistillParams) for f in cls.model_fields}
    assert sorted(set(PIPELINE_ONLY) - fields) == []
    assert sorted(set(TRANSLATED) - fields) == []
    assert set(PIPELINE_ONLY).isdisjoint(TRANSLATED)


def test_an_unlisted_field_fails_the_check_and_the_stage():
    class WithNewKnob(GRPOParams):
        new_knob: int = 1

    assert unmapped_fields(GRPOConfig, WithNewKnob) == ["new_knob"]
    cfg = tiny()
    section = WithNewKnob(**cfg.grpo.model_dump())
    with pytest.raises(StageError, match=r"grpo: new_knob: no field of that name in GRPOConfig"):
        trl_kwargs(GRPOConfig, section, cfg, "grpo", report=False)


def test_values_flow_by_name():
    cfg = tiny(
        "grpo.beta=0.123",
        "grpo.num_generations=4",
        "grpo.loss_type=grpo",
        "sft.max_length=96",
        "sft.completion_only_loss=false",
        "distill.learning_rate=7e-4",
    )
    grpo = trl_args(GRPOConfig, cfg.grpo, cfg, "grpo", report=False)
    assert (grpo.beta, grpo.num_generations, grpo.loss_type) == (0.123, 4, "grpo")
    sft = trl_args(SFTConfig, cfg.sft, cfg, "sft", report=False)
    assert (sft.max_length, sft.completion_only_loss) == (96, False)
    logit = trl_args(
        DistillationConfig, cfg.distill, cfg, "distill", report=False, unused=("max_length",), max_completion_length=33
    )
    assert (logit.learning_rate, logit.max_completion_length) == (7e-4, 33)
    # every field passed by name arrives unchanged (checked in the kwargs: TRL's __post_init__ resolves nulls)
    kwargs = trl_kwargs(GRPOConfig, cfg.grpo, cfg, "grpo", report=False)
    for name in GRPOParams.model_fields:
        if name in trl_field_names(GRPOConfig) and name not in PIPELINE_ONLY and name not in TRANSLATED:
            assert kwargs[name] == getattr(cfg.grpo, name), name


def test_translated_values():
    cfg = tiny("grpo.warmup_ratio=0.1", "grpo.epsilon=0.15", "grpo.epsilon_high=null", "sft.packing=true")
    grpo = trl_kwargs(GRPOConfig, cfg.grpo, cfg, "grpo", report=False)
    assert grpo["warmup_steps"] == 0.1  # transformers 5: a float below 1 is a ratio
    assert grpo["epsilon_high"] == 0.15  # null: the same as epsilon
    assert grpo["deepspeed"] is None  # deepspeed: none
    assert "vllm_server_host" not in grpo  # only for use_vllm with vllm_mode server
    assert trl_kwargs(SFTConfig, cfg.sft, cfg, "sft", report=False)["packing"] is False  # ours packs in rows
    cfg = tiny(
        "grpo.epsilon_high=0.3",
        "grpo.use_vllm=true",
        "grpo.vllm_mode=server",
        "grpo.vllm_server_host=10.0.0.2",
        "grpo.vllm_server_port=8123",
        "grpo.deepspeed=zero2",
    )
    grpo = trl_kwargs(GRPOConfig, cfg.grpo, cfg, "grpo", report=False)
    assert (grpo["epsilon_high"], grpo["vllm_server_host"], grpo["vllm_server_port"]) == (0.3, "10.0.0.2", 8123)
    assert grpo["deepspeed"].endswith("infra/deepspeed/zero2.json")


def test_run_wide_settings_and_overrides():
    cfg = tiny()
    kwargs = trl_kwargs(GRPOConfig, cfg.r1_zero, cfg, "r1_zero", report=False, log_completions=False)
    assert kwargs["output_dir"].endswith("checkpoints/r1_zero") and kwargs["run_name"] == "r1_zero"
    assert kwargs["report_to"] == [] and kwargs["log_completions"] is False
    assert kwargs["seed"] == cfg.project.seed and kwargs["save_strategy"] == "steps"


def test_liger_kernel_without_the_package_is_a_clear_error():
    """`use_liger_kernel: true` where liger-kernel is not installed (CI, CPU) names the key before training starts."""
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here")
    cfg = load_config_with([])
    assert trl_kwargs(SFTConfig, cfg.sft, cfg, "sft", report=False)["use_liger_kernel"] is False
    cfg = load_config_with(["sft.use_liger_kernel=true"])
    with pytest.raises(StageError, match=r"sft\.use_liger_kernel is true but liger_kernel is not installed"):
        trl_kwargs(SFTConfig, cfg.sft, cfg, "sft", report=False)


def load_config_with(overrides: list[str]):
    from r1_pipeline.config import apply_overrides, profile_dict, validate

    return validate(apply_overrides(profile_dict("micro"), overrides), "micro")
