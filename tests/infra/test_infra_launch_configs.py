"""accelerate configs (infra/accelerate/*.yaml) and DeepSpeed configs (infra/deepspeed/*.json).

accelerate: each file is loaded by accelerate's own loader and taken through `accelerate launch`'s argument
validation up to the point where processes would start; for DeepSpeed ones the launcher's environment is
handed to accelerate's DeepSpeedPlugin, which applies its own consistency checks.
DeepSpeed: every "auto" is filled the way the HF Trainer does it (HfTrainerDeepSpeedConfig) and the result is
parsed by DeepSpeed's DeepSpeedConfig (pydantic models that forbid unknown keys, batch-size arithmetic).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from infra_checks import INFRA, REPO, require_module

ACCEL_DIR = INFRA / "accelerate"
DS_DIR = INFRA / "deepspeed"
ACCEL_CONFIGS = sorted(p.name for p in ACCEL_DIR.glob("*.yaml"))
DS_CONFIGS = sorted(p.name for p in DS_DIR.glob("*.json"))

EXPECTED = {
    # file: (distributed_type, use_cpu, num_processes, deepspeed json or None)
    "single_gpu.yaml": ("NO", False, 1, None),
    "multi_gpu.yaml": ("MULTI_GPU", False, 8, None),
    "multi_gpu_zero2.yaml": ("DEEPSPEED", False, 8, "zero2.json"),
    "multi_gpu_zero3.yaml": ("DEEPSPEED", False, 8, "zero3.json"),
    "multi_node_zero3.yaml": ("DEEPSPEED", False, 16, "zero3.json"),
    "cpu_zero2.yaml": ("DEEPSPEED", True, 2, "zero2.json"),
}


def test_every_config_is_covered():
    assert set(ACCEL_CONFIGS) == set(EXPECTED)
    assert set(DS_CONFIGS) == {"zero2.json", "zero3.json"}


# ------------------------------------------------------------------------------------------------ accelerate


def load_accelerate(path: Path):
    config_args = require_module("accelerate.commands.config.config_args", "accelerate")
    return config_args.load_config_from_file(str(path))


def launch_environment(path: Path, monkeypatch) -> tuple[SimpleNamespace, dict]:
    """Run `accelerate launch --config_file <path> train.py` up to (not including) starting processes."""
    launch = require_module("accelerate.commands.launch", "accelerate")
    launch_utils = require_module("accelerate.utils.launch", "accelerate")
    monkeypatch.chdir(REPO)  # deepspeed_config_file paths are relative to the repository root
    args = launch.launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, defaults, mp_from_config = launch._validate_launch_command(args)
    env: dict = {}
    if args.use_deepspeed:
        # As accelerate's launch_command does before calling the DeepSpeed launcher.
        fields = list(defaults.deepspeed_config.keys()) if defaults else []
        if mp_from_config:
            fields.append("mixed_precision")
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = launch_utils.prepare_deepspeed_cmd_env(args)
    return args, env


def deepspeed_plugin_from(env: dict, monkeypatch):
    utils = require_module("accelerate.utils", "accelerate")
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    return utils.DeepSpeedPlugin()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_loads(name):
    dist, use_cpu, nproc, ds_json = EXPECTED[name]
    cfg = load_accelerate(ACCEL_DIR / name)
    assert cfg.distributed_type.value == dist
    assert cfg.use_cpu is use_cpu
    assert cfg.num_processes == nproc
    if ds_json:
        ds_file = cfg.deepspeed_config["deepspeed_config_file"]
        assert ds_file == f"infra/deepspeed/{ds_json}"
        assert (REPO / ds_file).is_file()
        # accelerate refuses these next to deepspeed_config_file: they belong in the JSON.
        assert cfg.mixed_precision in (None, "no")
        assert not {"gradient_accumulation_steps", "zero_stage", "gradient_clipping"} & set(cfg.deepspeed_config)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_launch_accepts_config(name, monkeypatch):
    dist, use_cpu, nproc, ds_json = EXPECTED[name]
    args, env = launch_environment(ACCEL_DIR / name, monkeypatch)
    assert args.num_processes == nproc
    assert bool(args.use_deepspeed) is (dist == "DEEPSPEED")
    if ds_json:
        assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == f"infra/deepspeed/{ds_json}"
        plugin = deepspeed_plugin_from(env, monkeypatch)
        assert plugin.zero_stage == (3 if "zero3" in ds_json else 2)
        assert plugin.zero3_init_flag is (plugin.zero_stage == 3)


def test_cpu_config_launches_deepspeed_on_cpu(monkeypatch):
    """accelerate 1.15: `use_cpu: true` in the file keeps the DeepSpeed launcher and tells the workers to use
    the CPU (ACCELERATE_USE_CPU), unlike the `--cpu` flag, which would drop DeepSpeed."""
    launch_utils = require_module("accelerate.utils.launch", "accelerate")
    args, env = launch_environment(ACCEL_DIR / "cpu_zero2.yaml", monkeypatch)
    assert args.use_deepspeed and not args.cpu and args.use_cpu
    _, simple_env = launch_utils.prepare_simple_launcher_cmd_env(args)
    assert simple_env["ACCELERATE_USE_CPU"] == "True"


def test_broken_accelerate_configs_are_rejected(tmp_path, monkeypatch):
    good = yaml.safe_load((ACCEL_DIR / "multi_gpu_zero3.yaml").read_text())

    unknown_key = dict(good, num_proceses=8)  # typo: accelerate rejects unknown keys
    p1 = tmp_path / "unknown.yaml"
    p1.write_text(yaml.safe_dump(unknown_key))
    with pytest.raises(ValueError, match="unknown keys"):
        load_accelerate(p1)

    bad_type = dict(good, distributed_type="DEEPSPEEED")
    p2 = tmp_path / "bad_type.yaml"
    p2.write_text(yaml.safe_dump(bad_type))
    with pytest.raises(ValueError):
        load_accelerate(p2)

    # mixed_precision next to deepspeed_config_file: accelerate's DeepSpeed plugin refuses the combination.
    conflict = dict(good, mixed_precision="bf16")
    p3 = tmp_path / "conflict.yaml"
    p3.write_text(yaml.safe_dump(conflict))
    _, env = launch_environment(p3, monkeypatch)
    with pytest.raises(ValueError, match="deepspeed_config_file"):
        deepspeed_plugin_from(env, monkeypatch)

    missing_ds = {**good["deepspeed_config"], "deepspeed_config_file": "infra/deepspeed/nope.json"}
    missing = dict(good, deepspeed_config=missing_ds)
    p4 = tmp_path / "missing.yaml"
    p4.write_text(yaml.safe_dump(missing))
    _, env = launch_environment(p4, monkeypatch)
    with pytest.raises(ValueError):
        deepspeed_plugin_from(env, monkeypatch)


# ------------------------------------------------------------------------------------------------- DeepSpeed


def trainer_args(**overrides) -> SimpleNamespace:
    """The TrainingArguments fields HfTrainerDeepSpeedConfig reads (8 GPUs, bf16)."""
    base = dict(
        world_size=8,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_grad_norm=1.0,
        learning_rate=3e-5,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        save_on_each_node=False,
        fp16=False,
        fp16_full_eval=False,
        bf16=True,
        bf16_full_eval=False,
        get_warmup_steps=lambda n: 0,
    )
    base.update(overrides)
    return SimpleNamespace(**base)


def filled_config(source, args=None) -> dict:
    """Fill every "auto" as the HF Trainer does (trainer_config_process + trainer_config_finalize)."""
    hf_ds = require_module("transformers.integrations.deepspeed", "transformers")
    require_module("deepspeed")
    args = args or trainer_args()
    try:
        cfg = hf_ds.HfTrainerDeepSpeedConfig(source)
        cfg.trainer_config_process(args)
        model = SimpleNamespace(config=SimpleNamespace(hidden_size=1536))
        cfg.trainer_config_finalize(args, model, num_training_steps=100)
        return cfg.config
    finally:
        # The config registers itself globally (is_deepspeed_zero3_enabled); never leak it into other tests.
        hf_ds.unset_hf_deepspeed_config()


def deepspeed_parse(config: dict):
    ds_config = require_module("deepspeed.runtime.config", "deepspeed")
    # DeepSpeedConfig checks train_batch_size = micro * grad_acc * world_size with the current world size (1
    # without torch.distributed): check the 8-GPU arithmetic, then parse the per-GPU view.
    per_gpu = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"]
    single = dict(config, train_batch_size=per_gpu)
    return ds_config.DeepSpeedConfig(single)


def find_auto(node, path="") -> list[str]:
    if node == "auto":
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in find_auto(v, f"{path}.{k}" if path else k)]
    return []


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json"])
def test_deepspeed_config_fills_and_parses(name):
    raw = json.loads((DS_DIR / name).read_text())
    assert "optimizer" not in raw and "scheduler" not in raw, "optimizer/scheduler come from params via the Trainer"
    assert find_auto(raw), "batch sizes, clipping and precision must be 'auto' (filled from TrainingArguments)"
    config = filled_config(str(DS_DIR / name))
    assert find_auto(config) == []
    assert config["train_batch_size"] == 8 * 4 * 2
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    parsed = deepspeed_parse(config)
    stage = 3 if name == "zero3.json" else 2
    assert parsed.zero_optimization_stage == stage
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    if stage == 3:
        assert parsed.zero_config.gather_16bit_weights_on_model_save is True
        assert config["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 1536 * 1536)


def test_deepspeed_cpu_precision_resolves_to_fp32():
    config = filled_config(str(DS_DIR / "zero2.json"), trainer_args(bf16=False, world_size=2))
    assert config["bf16"]["enabled"] is False and config["fp16"]["enabled"] is False
    assert deepspeed_parse(config).zero_optimization_stage == 2


def test_broken_deepspeed_configs_are_rejected(tmp_path):
    pydantic = require_module("pydantic")
    raw = json.loads((DS_DIR / "zero3.json").read_text())

    typo = json.loads(json.dumps(raw))
    typo["zero_optimization"]["overlap_com"] = typo["zero_optimization"].pop("overlap_comm")
    with pytest.raises(pydantic.ValidationError, match="overlap_com"):
        deepspeed_parse(filled_config(typo))

    bad_stage = json.loads(json.dumps(raw))
    bad_stage["zero_optimization"]["stage"] = 4
    with pytest.raises(pydantic.ValidationError):
        deepspeed_parse(filled_config(bad_stage))

    # A hard-coded value that disagrees with TrainingArguments: the HF integration refuses it.
    mismatch = json.loads(json.dumps(raw))
    mismatch["gradient_accumulation_steps"] = 16
    with pytest.raises(ValueError, match="mismatch"):
        filled_config(mismatch)


def test_params_names_resolve_to_files():
    """`deepspeed: zero2|zero3` in params.yaml selects infra/deepspeed/<name>.json."""
    for name in ("zero2", "zero3"):
        assert (DS_DIR / f"{name}.json").is_file()
    assert os.path.isfile(ACCEL_DIR / "cpu_zero2.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("ds_json", ["zero2.json", "zero3.json"])
def test_smoke_train_through_cpu_deepspeed(ds_json, tmp_path):
    """End to end: `accelerate launch` with cpu_zero2.yaml and each DeepSpeed JSON trains the tiny model on 2 CPU
    processes (gloo) and saves it (ZeRO-3 gathers its shards). About 2-3 minutes on 2 cores."""
    require_module("deepspeed")
    require_module("accelerate")
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "infra/accelerate/cpu_zero2.yaml",
        "--deepspeed_config_file",
        f"infra/deepspeed/{ds_json}",
        "infra/accelerate/smoke_train.py",
        "--output-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stage = "3" if "zero3" in ds_json else "2"
    assert f"distributed_type=DEEPSPEED zero_stage={stage} backend=gloo" in res.stdout
    assert (tmp_path / "model.safetensors").is_file()
