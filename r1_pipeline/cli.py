"""The `r1` command line: config, verification, stages and the pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer

from r1_pipeline.config import (
    PROFILES_DIR,
    ConfigError,
    apply_overrides,
    describe,
    load_config,
    profile_dict,
    to_yaml,
    validate,
)

app = typer.Typer(help="r1-pipeline: the DeepSeek-R1 recipe as a reproducible pipeline.", no_args_is_help=True)
config_app = typer.Typer(help="Show, validate and switch the params (profiles and overrides).", no_args_is_help=True)
app.add_typer(config_app, name="config")

STAGES = ["data", "base", "sft", "grpo", "r1_zero", "rejection", "distill", "evaluate", "report"]

ParamsOpt = typer.Option("params.yaml", "--params", help="Params file to read.")
SetOpt = typer.Option(None, "--set", help="Override one value: KEY.PATH=VALUE (repeatable).")
ProfileOpt = typer.Option(None, "--profile", help="Start from a profile instead of the params file.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@config_app.command("show")
def config_show(params: Path = ParamsOpt, set_: Optional[List[str]] = SetOpt, profile: Optional[str] = ProfileOpt):
    """Print the effective, validated config (params or profile, plus overrides) as YAML."""
    try:
        cfg = load_config(params, set_ or [], profile=profile)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(to_yaml(cfg), nl=False)


@config_app.command("validate")
def config_validate(params: Path = ParamsOpt, set_: Optional[List[str]] = SetOpt, profile: Optional[str] = ProfileOpt):
    """Validate the params (exit 2 with one line per problem when invalid)."""
    try:
        load_config(params, set_ or [], profile=profile)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(f"{profile and f'profile {profile}' or params}: valid")


@config_app.command("use")
def config_use(
    profile: str = typer.Argument(..., help="Profile name (tiny, or a file in profiles/)."),
    params: Path = ParamsOpt,
    set_: Optional[List[str]] = SetOpt,
):
    """Write the profile (schema defaults + overlay + overrides) to params.yaml, validated and atomically."""
    from r1_pipeline.io import write_text

    try:
        cfg = validate(apply_overrides(profile_dict(profile), set_ or []), f"profile {profile}", Path(params).resolve().parent)
    except ConfigError as exc:
        _fail(str(exc))
    write_text(params, f"# profile: {profile} (written by `r1 config use {profile}`)\n" + to_yaml(cfg))
    typer.echo(f"{params}: now profile {profile}")


@config_app.command("profiles")
def config_profiles():
    """List the available profiles."""
    typer.echo("tiny (the schema defaults)")
    for p in sorted(PROFILES_DIR.glob("*.yaml")):
        first = p.read_text().splitlines()[0] if p.read_text() else ""
        typer.echo(f"{p.stem}  {first.lstrip('# ')}")


@config_app.command("docs")
def config_docs():
    """Every params key with its default and help text."""
    for key, default, help_ in describe():
        typer.echo(f"{key}\n    {help_}" + (f"\n    default: {default}" if default != "section" else ""))


@app.command("verify")
def verify_cmd(
    file: Path = typer.Argument(..., help="JSONL of model responses."),
    response_field: str = typer.Option("response", help="Field with the model response."),
    gold_field: str = typer.Option("gold_answer", help="Field with the gold answer."),
    label_field: Optional[str] = typer.Option(None, help="Field with an independent correctness label (agreement)."),
    gold_format: str = typer.Option("plain", help="How to read the gold answer: plain, gsm8k (#### x) or boxed."),
    group_field: Optional[str] = typer.Option(None, help="Field to break agreement down by (e.g. benchmark)."),
    output: Optional[Path] = typer.Option(None, help="Write per-item verdicts to this JSONL."),
):
    """Score responses against gold answers with the accuracy reward's verifier; print agreement and throughput."""
    from r1_pipeline.verify import run_verify

    raise typer.Exit(
        run_verify(file=file, response_field=response_field, gold_field=gold_field, label_field=label_field,
                   gold_format=gold_format, group_field=group_field, output=output)
    )


@app.command("stage")
def stage_cmd(
    name: str = typer.Argument(..., help=f"One of: {', '.join(STAGES)}."),
    params: Path = ParamsOpt,
    set_: Optional[List[str]] = SetOpt,
):
    """Run one stage directly (what `dvc repro` calls), e.g. `r1 stage sft --set sft.max_steps=5`."""
    if name not in STAGES:
        _fail(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    cmd = [sys.executable, "-m", f"tasks.{name}", "--params", str(params)]
    for item in set_ or []:
        cmd += ["--set", item]
    raise typer.Exit(subprocess.call(cmd))


if __name__ == "__main__":
    app()
