"""The project code each stage runs: its import closure, the dvc.yaml check and the code hash for resume keys.

A stage's code is `tasks/<stage>.py` plus every project module it imports, directly or through other project
modules, at module level or inside a function (read statically from the source with `ast`, so nothing is
imported and nothing runs). Package `__init__.py` files count too: importing `r1_pipeline.data.build` runs
`r1_pipeline/__init__.py` and `r1_pipeline/data/__init__.py` first.

Two things are built on the closure:

- `check_dvc_deps()` (`r1 dag check`, and a unit test) compares it with each stage's `deps` in dvc.yaml, so a
  stage whose code changes is always out of date for DVC, and a dep the stage no longer imports is flagged.
  We list exact files rather than whole code folders: a change to the report's code then reruns only the
  report, not the training stages (which depending on `r1_pipeline/` as a whole would).
- `code_hash(stage)` hashes the closure's bytes: part of the resume key of trainer checkpoints, so a code fix
  never resumes a checkpoint written by the old code.

Imports the AST cannot see (`importlib.import_module(name)` with a computed name) are not followed; the
project does not use them for its own modules.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("r1_pipeline", "tasks")  # the code a stage can run; flows/ and bench/ are never imported by stages
CODE_SUFFIXES = (".py",)


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (`r1_pipeline.chat` -> r1_pipeline/chat.py), else None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imported_names(path: Path, root: Path) -> set[str]:
    """Every module name an `import` / `from … import …` in the file can refer to (resolved relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            # `from r1_pipeline import paths` imports the submodule r1_pipeline.paths when there is one
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_closure(entry: str, root: Path = ROOT) -> list[Path]:
    """The project files that running module `entry` (e.g. `tasks.sft`) executes, sorted, relative to root."""
    start = module_file(entry, root)
    if start is None:
        raise ValueError(f"{entry}: no such project module under {root}")
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        name = _module_name(path, root)
        # the packages above a module run first
        parts = name.split(".")
        for i in range(1, len(parts)):
            init = module_file(".".join(parts[:i]), root)
            if init is not None:
                todo.append(init)
        for imported in _imported_names(path, root):
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):  # `import a.b.c` runs a, a.b and a.b.c
                f = module_file(".".join(parts[:i]), root)
                if f is not None:
                    todo.append(f)
    return sorted(p.relative_to(root) for p in seen)


def stage_closure(stage: str, root: Path = ROOT) -> list[Path]:
    return import_closure(f"tasks.{stage}", root)


@lru_cache(maxsize=None)
def code_hash(stage: str, root: Path = ROOT) -> str:
    """sha256 over the paths and bytes of the stage's import closure."""
    h = hashlib.sha256()
    for rel in stage_closure(stage, root):
        h.update(str(rel).encode() + b"\0")
        h.update((root / rel).read_bytes() + b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- dvc.yaml deps check


@dataclass
class DepsReport:
    stage: str
    missing: list[str] = field(default_factory=list)  # imported project files no dep covers
    unused: list[str] = field(default_factory=list)  # code deps the stage does not import
    expected: list[str] = field(default_factory=list)  # the code deps the stage should list

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unused


def _is_code(dep: str, root: Path) -> bool:
    top = dep.split("/")[0]
    return top in PACKAGES and ((root / dep).is_dir() or dep.endswith(CODE_SUFFIXES))


def check_dvc_deps(dvc_yaml: Path | None = None, root: Path = ROOT) -> list[DepsReport]:
    """One report per stage of dvc.yaml whose cmd is `python -m tasks.<stage>`."""
    dvc_yaml = dvc_yaml or root / "dvc.yaml"
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    reports = []
    for name, spec in stages.items():
        cmd = str(spec.get("cmd", ""))
        if not cmd.startswith("python -m tasks."):
            continue
        module = cmd.split()[2]
        closure = [str(p) for p in import_closure(module, root)]
        deps = [str(d) for d in spec.get("deps", [])]
        code_deps = [d.rstrip("/") for d in deps if _is_code(d, root)]

        def covered(f: str) -> bool:
            return any(f == d or f.startswith(d + "/") for d in code_deps)

        report = DepsReport(stage=name, expected=closure)
        report.missing = [f for f in closure if not covered(f)]
        report.unused = [d for d in code_deps if not any(f == d or f.startswith(d + "/") for f in closure)]
        reports.append(report)
    return reports


def format_reports(reports: list[DepsReport]) -> str:
    lines = []
    for r in reports:
        if r.ok:
            continue
        if r.missing:
            lines.append(
                f"dvc.yaml: stage {r.stage}: missing code deps (imported by tasks/{r.stage}.py): "
                + ", ".join(r.missing)
            )
        if r.unused:
            lines.append(f"dvc.yaml: stage {r.stage}: code deps it does not import: " + ", ".join(r.unused))
        lines.append(f"  expected code deps: [{', '.join(r.expected)}]")
    return "\n".join(lines)


def fix_dvc_yaml(dvc_yaml: Path | None = None, root: Path = ROOT) -> list[str]:
    """Rewrite each stage's `deps: [...]` line in place: its code closure (entry first), then its other deps.

    Only the flow-style `deps: [...]` value of each stage is replaced; comments and layout elsewhere stay.
    Returns the names of the stages whose deps changed.
    """
    import re
    import textwrap

    dvc_yaml = dvc_yaml or root / "dvc.yaml"
    text = dvc_yaml.read_text()
    stages = yaml.safe_load(text)["stages"]
    changed = []
    for report in check_dvc_deps(dvc_yaml, root):
        if report.ok:
            continue
        entry = f"tasks/{report.stage}.py"
        others = [str(d) for d in stages[report.stage].get("deps", []) if not _is_code(str(d), root)]
        items = [entry, *(f for f in report.expected if f != entry), *others]
        lines = textwrap.wrap(", ".join(items), width=104, break_on_hyphens=False, break_long_words=False)
        new = "deps: [" + "\n           ".join(lines) + "]"
        pattern = re.compile(r"(\n  %s:\n    cmd: [^\n]*\n    )deps: \[[^\]]*\]" % re.escape(report.stage))
        text, n = pattern.subn(lambda m: m.group(1) + new, text)
        if n != 1:
            raise ValueError(f"{dvc_yaml}: stage {report.stage}: expected `cmd:` then a one-value `deps: [...]`")
        changed.append(report.stage)
    if changed:
        from r1_pipeline.io import write_text

        write_text(dvc_yaml, text)
    return changed
