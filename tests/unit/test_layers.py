"""The import layers: the ML core (r1_pipeline/) and the stages (tasks/) never reach into the ops side
(r1_ops/: CLI, orchestration, services; flows/: the Prefect flow), and no stage imports another stage.

Every import counts, also the ones inside functions: a lazy import still puts the module in the stage's
code closure (dvc.yaml deps) and couples the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPS = ("r1_ops", "flows")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import statement in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # `from tasks import sft` names a module too
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(files: list[Path], forbidden) -> list[str]:
    return [
        f"{f.relative_to(ROOT)}:{line} imports {mod}"
        for f in files
        for line, mod in imported_modules(f)
        if forbidden(f, mod)
    ]


def _is(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def core_files() -> list[Path]:
    return sorted((ROOT / "r1_pipeline").rglob("*.py"))


def task_files() -> list[Path]:
    return sorted((ROOT / "tasks").glob("*.py"))


def test_the_layers_have_files():
    assert len(core_files()) > 10 and len(task_files()) > 5


def test_core_and_tasks_never_import_the_ops_side():
    bad = violations(core_files() + task_files(), lambda f, mod: any(_is(mod, p) for p in OPS))
    assert not bad, "the ML core imports the ops side:\n" + "\n".join(bad)


def test_the_core_never_imports_a_stage():
    bad = violations(core_files(), lambda f, mod: _is(mod, "tasks"))
    assert not bad, "the core imports a stage module:\n" + "\n".join(bad)


def test_library_code_never_imports_the_stage_launcher():
    """StageError/require live in r1_pipeline.errors: only the stages' entry points need r1_pipeline.stage."""
    launcher = ROOT / "r1_pipeline" / "stage.py"
    bad = violations([f for f in core_files() if f != launcher], lambda f, mod: _is(mod, "r1_pipeline.stage"))
    assert not bad, "library code imports the stage launcher:\n" + "\n".join(bad)


def test_no_stage_imports_another_stage():
    bad = violations(task_files(), lambda f, mod: _is(mod, "tasks") and mod != "tasks.__init__")
    assert not bad, "a stage imports another stage:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "source, forbidden_module",
    [
        ("from r1_ops import orchestration\n", "r1_ops"),
        ("def f():\n    from flows.pipeline import r1_pipeline\n", "flows"),
        ("import tasks.sft\n", "tasks"),
        ("from r1_pipeline import stage\n", "r1_pipeline.stage"),
    ],
)
def test_the_check_sees_imports_at_any_depth(tmp_path, source, forbidden_module):
    f = tmp_path / "m.py"
    f.write_text(source)
    assert any(_is(mod, forbidden_module) for _, mod in imported_modules(f))
