"""What the Prefect flow needs around DVC, subprocesses and services; no Prefect import here.

- The stage graph comes from DVC (`dvc dag --dot`): the flow never declares it a second time.
- A stage runs as `dvc repro --single-item <stage>` in a process group of its own (start_new_session), so a
  timeout, Ctrl-C or a Prefect cancellation can kill the whole tree (dvc -> sh -> python -> dataloader workers)
  with one `os.killpg`, and a terminal's Ctrl-C never reaches the training directly.
- That child also gets PR_SET_PDEATHSIG (SIGKILL): if the flow process dies (kill -9, an OOM kill of the
  worker) the kernel kills `dvc` too. The stage below it watches the flow's pid itself (R1_PARENT_PID, see
  r1_pipeline.stage) and takes its whole process group down, so nothing keeps training for a dead flow.
- One pipeline run per checkout: the flow holds an exclusive flock on `.r1/locks/workspace.lock` (pid, host,
  flow run, its Prefect slot lease and MLflow parent run written inside). The OS drops the lock with its
  holder, so whoever gets it next knows no live flow holds the checkout and can clean up after a dead one
  (its Prefect leases and MLflow runs: flows/pipeline.py; DVC's rwlock entries of its killed `dvc`, which
  DVC itself keeps honouring while the dead process is an unreaped zombie: clear_dead_dvc_locks).
- Servers are checked with one short HTTP request before anything runs: MLflow's and Prefect's clients retry
  for minutes by default, which looks like a hang.
- Overrides are validated with the project's config schema before params.yaml is touched, and live in
  params.yaml only while the run that asked for them runs (`params_overlay`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import yaml

from r1_pipeline.config import ConfigError, apply_overrides, load_config, load_yaml
from r1_pipeline.io import sha256_file, write_text
from r1_pipeline.registry import params_profile  # noqa: F401 (re-exported for the flow)
from r1_pipeline.stage import HolderLock, describe_holder, holder_info, parent_death_preexec


class OrchestrationError(RuntimeError):
    """A problem the user must fix before the pipeline can run (bad stage name, server down, ...)."""


class UnknownStageError(OrchestrationError, ValueError):
    pass


class ServiceUnreachable(OrchestrationError):
    pass


# --------------------------------------------------------------------------------------------- the DVC graph


def bin_path(name: str) -> str:
    """An executable of this environment (next to the running interpreter), else from PATH.

    A Prefect worker started as `.venv/bin/prefect worker start` runs flows with the venv's Python but a PATH
    that may not include the venv: `dvc` and the stages' `python` must still be the venv's.
    """
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise OrchestrationError(f"`{name}` not found next to {sys.executable} nor on PATH")
    return found


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a stage: this interpreter's bin dir first on PATH (so `python -m tasks.x` in
    dvc.yaml is this environment's Python), unbuffered output (lines reach the log as they are printed)."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class StageGraph:
    order: list[str]  # a topological order (ties broken by the order dvc lists the stages: dvc.yaml's)
    upstream: dict[str, set[str]] = field(default_factory=dict)  # direct dependencies of each stage

    def select(self, requested: Iterable[str] | None) -> list[str]:
        """The requested stages in pipeline order; all when None/empty. Unknown names: one clear error."""
        if not requested:
            return list(self.order)
        requested = list(requested)
        unknown = [s for s in requested if s not in self.order]
        if unknown:
            raise UnknownStageError(
                f"unknown stage{'s' if len(unknown) > 1 else ''} {', '.join(repr(s) for s in unknown)}; "
                f"valid stages (from dvc.yaml): {', '.join(self.order)}"
            )
        return [s for s in self.order if s in set(requested)]

    def check_keys(self, mapping: dict | None, what: str) -> None:
        unknown = sorted(set(mapping or {}) - set(self.order))
        if unknown:
            raise UnknownStageError(
                f"{what}: unknown stage(s) {', '.join(unknown)}; valid stages: {', '.join(self.order)}"
            )


_DOT_NODE = re.compile(r'^\s*"([^"]+)";\s*$')
_DOT_EDGE = re.compile(r'^\s*"([^"]+)"\s*->\s*"([^"]+)";\s*$')


def parse_dag_dot(text: str) -> StageGraph:
    """Parse `dvc dag --dot` (edges point from a stage to the stages that depend on it)."""
    nodes: list[str] = []
    upstream: dict[str, set[str]] = {}
    for line in text.splitlines():
        if m := _DOT_EDGE.match(line):
            src, dst = m.groups()
            for n in (src, dst):
                if n not in upstream:
                    nodes.append(n)
                    upstream[n] = set()
            upstream[dst].add(src)
        elif m := _DOT_NODE.match(line):
            if m.group(1) not in upstream:
                nodes.append(m.group(1))
                upstream[m.group(1)] = set()
    # Kahn's algorithm, always taking the earliest-listed ready stage: deterministic and close to dvc.yaml.
    order, done = [], set()
    while len(order) < len(nodes):
        ready = [n for n in nodes if n not in done and upstream[n] <= done]
        if not ready:
            raise OrchestrationError(f"dvc dag has a cycle among {sorted(set(nodes) - done)}")
        order.append(ready[0])
        done.add(ready[0])
    return StageGraph(order=order, upstream=upstream)


def run_dvc(args: list[str], cwd: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [bin_path("dvc"), *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise OrchestrationError(f"`dvc {' '.join(args)}` in {cwd} took more than {timeout:.0f}s") from None


def stage_graph(project_dir: str | Path) -> StageGraph:
    """The pipeline's stages and their order, as DVC sees them in `project_dir`."""
    if not (Path(project_dir) / "dvc.yaml").exists():
        raise OrchestrationError(f"{Path(project_dir).resolve()}: no dvc.yaml here (run from the project root)")
    out = run_dvc(["dag", "--dot"], project_dir)
    if out.returncode != 0:
        raise OrchestrationError(f"`dvc dag` failed in {project_dir}:\n{(out.stderr or out.stdout).strip()}")
    graph = parse_dag_dot(out.stdout)
    if not graph.order:
        raise OrchestrationError(f"`dvc dag` in {project_dir} lists no stages")
    return graph


def dvc_status(project_dir: str | Path) -> dict[str, list]:
    """`dvc status --json`: the stages whose deps, params or outs differ from dvc.lock (all others are up to date)."""
    out = run_dvc(["status", "--json"], project_dir)
    if out.returncode != 0:
        raise OrchestrationError(f"`dvc status` failed in {project_dir}:\n{(out.stderr or out.stdout).strip()}")
    import json

    text = out.stdout.strip()
    return json.loads(text) if text else {}


_RAN = re.compile(r"^Running stage '([^']+)':")
_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")
_CACHED = re.compile(r"^Stage '([^']+)' is cached - skipping run")


def repro_outcome(lines: Iterable[str], stage: str) -> str:
    """What `dvc repro --single-item <stage>` did, from its output: ran, skipped (up to date) or cached
    (outputs restored from DVC's run cache: the same command, deps and params ran before)."""
    rank = {"unknown": 0, "skipped": 1, "cached": 2, "ran": 3}
    outcome = "unknown"
    for line in lines:
        for pattern, name in ((_RAN, "ran"), (_SKIPPED, "skipped"), (_CACHED, "cached")):
            m = pattern.match(line.strip())
            if m and m.group(1).split(":")[-1] == stage and rank[name] > rank[outcome]:
                outcome = name
    return outcome


# ------------------------------------------------------------------------------- a stage in its own process group

_LIVE_GROUPS: set[int] = set()
_LIVE_LOCK = threading.Lock()


def kill_process_group(pgid: int, grace_s: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the whole group, give it `grace_s` to exit (trainers flush, DVC releases its lock), then SIGKILL."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()  # reap the leader, else its zombie keeps the group "alive"
        if not _group_alive(pgid):
            if proc is not None:
                try:
                    proc.wait(timeout=2)  # reap the leader's zombie
                except subprocess.TimeoutExpired:
                    pass
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Only zombies left (children of a dead leader are reparented to init, which reaps them quickly)?
    proc_dir = Path("/proc")
    if proc_dir.exists():
        for stat in proc_dir.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    return True


def _kill_all_live_groups() -> None:
    with _LIVE_LOCK:
        groups = list(_LIVE_GROUPS)
    for pgid in groups:
        kill_process_group(pgid, grace_s=3.0)


atexit.register(_kill_all_live_groups)


class StageInterrupted(BaseException):
    """SIGTERM while a stage ran outside Prefect's engine (which raises its own TerminationSignal)."""


@dataclass
class ProcessResult:
    returncode: int | None
    seconds: float
    timed_out: bool
    tail: list[str]


def run_in_process_group(
    cmd: list[str],
    cwd: str | Path,
    env: dict[str, str],
    timeout_s: float | None,
    on_line: Callable[[str], None],
    kill_grace_s: float = 10.0,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    tail_lines: int = 40,
) -> ProcessResult:
    """Run `cmd` in a new session; hand each output line to `on_line` (in the calling thread) as it comes.

    On timeout the group is killed and `timed_out` is set. On any exception in the caller's thread while the
    command runs (KeyboardInterrupt, Prefect's TerminationSignal on cancellation, SystemExit) the whole group
    is killed before the exception propagates.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
        errors="replace",
        bufsize=1,
        # A new session also escapes the death of this process: the kernel kills the direct child when this
        # thread dies (it waits for the child below, so that is when this process dies); the stage's own
        # watchdog takes care of the rest of the tree.
        preexec_fn=parent_death_preexec(signal.SIGKILL),
    )
    pgid = proc.pid
    with _LIVE_LOCK:
        _LIVE_GROUPS.add(pgid)
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=reader, name=f"output-of-{pgid}", daemon=True).start()

    restore = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        # Outside Prefect's engine a SIGTERM would end this process without running the cleanup below.
        def _on_term(signum, frame):
            raise StageInterrupted(signum)

        restore = signal.signal(signal.SIGTERM, _on_term)
    tail: list[str] = []
    timed_out = False
    try:
        if on_start:
            on_start(proc)
        deadline = start + timeout_s if timeout_s else None
        eof = False
        leader_gone = 0.0
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                timed_out = True
                kill_process_group(pgid, kill_grace_s, proc)
                break
            if eof:
                # All writers closed the pipe; the leader normally exits with them.
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
                continue
            if proc.poll() is not None:
                # The leader is gone but something it started still holds the output pipe open: give the
                # output a moment to drain, then the stragglers go with the group.
                leader_gone = leader_gone or now
                if now - leader_gone > 3.0:
                    kill_process_group(pgid, kill_grace_s, proc)
                    break
            wait = 0.5 if deadline is None else max(0.01, min(0.5, deadline - now))
            try:
                item = lines.get(timeout=wait)
            except queue.Empty:
                continue
            if item is None:
                eof = True
                continue
            tail.append(item)
            del tail[:-tail_lines]
            on_line(item)
    except BaseException:
        kill_process_group(pgid, kill_grace_s, proc)
        raise
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        if proc.poll() is None or _group_alive(pgid):
            # The leader exited but left children behind (a daemonized helper): they go too.
            kill_process_group(pgid, kill_grace_s, proc)
        with _LIVE_LOCK:
            _LIVE_GROUPS.discard(pgid)
    return ProcessResult(proc.returncode, time.monotonic() - start, timed_out, tail)


# ------------------------------------------------------------------------------- one pipeline run per checkout

WORKSPACE_LOCK = Path(".r1") / "locks" / "workspace.lock"


def acquire_workspace_lock(
    root: str | Path, wait_s: float | None, on_wait: Callable[[str], None] | None = None, poll_s: float = 0.5, **info
) -> HolderLock:
    """The checkout's flock (`.r1/locks/workspace.lock`), waiting up to `wait_s` (None: as long as it takes).

    `lock.previous` is the record a dead holder left behind (None after a clean exit). TimeoutError, naming
    the holder, when another live run keeps it longer than `wait_s`.
    """
    lock = HolderLock(Path(root) / WORKSPACE_LOCK)
    deadline = None if wait_s is None else time.monotonic() + wait_s
    told = False
    while not lock.acquire(holder_info(**info)):
        who = describe_holder(lock.holder(), lock.path)
        if not told and on_wait is not None:
            on_wait(who)
            told = True
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"another pipeline run holds the checkout {root} ({who}); waited {wait_s:.0f}s")
        time.sleep(poll_s)
    return lock


def clear_dead_dvc_locks(root: str | Path) -> list[dict]:
    """Drop entries of processes that are not running any more from DVC's `.dvc/tmp/rwlock`; returns them.

    DVC drops an entry itself when its pid does not exist, but a killed `dvc` stays a zombie until init reaps
    it, and `psutil.pid_exists` says yes to a zombie: `dvc status` then fails with "is busy, it is being
    blocked by (PID ...)" for as long as the zombie lingers (forever under a PID 1 that never reaps). A zombie
    holds nothing: removing its entries under DVC's own rwlock guard is always safe.
    """
    lock_dir = Path(root) / ".dvc" / "tmp"
    if not (lock_dir / "rwlock").exists():
        return []
    import psutil
    from dvc.fs import localfs
    from dvc.rwlock import _edit_rwlock

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    removed: list[dict] = []
    with _edit_rwlock(str(lock_dir), localfs, False) as lock:
        for path, info in list(lock["write"].items()):
            if not running(int(info["pid"])):
                removed.append({"mode": "write", "path": path, **info})
                del lock["write"][path]
        for path, infos in list(lock["read"].items()):
            keep = [i for i in infos if running(int(i["pid"]))]
            removed += [{"mode": "read", "path": path, **i} for i in infos if i not in keep]
            if keep:
                lock["read"][path] = keep
            else:
                del lock["read"][path]
    return removed


# ------------------------------------------------------------------------------------------- service checks


def http_ok(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own URL)
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, str(getattr(exc, "reason", exc))


def check_mlflow(uri: str, timeout: float = 3.0) -> None:
    """Fail in seconds with a clear message when an MLflow tracking server is down (file/SQLite URIs need none)."""
    if uri.startswith(("http://", "https://")):
        require_healthy(
            uri,
            f"MLflow tracking server {uri}",
            "unset MLFLOW_TRACKING_URI to log to the project's sqlite:///mlflow.db",
            timeout,
        )


def check_prefect_api(url: str | None, timeout: float = 3.0) -> None:
    """PREFECT_API_URL set but the server down: say so now instead of letting the client retry for minutes."""
    if url:
        require_healthy(
            url,
            f"Prefect API {url}",
            "unset PREFECT_API_URL to run with a temporary in-process Prefect server",
            timeout,
        )


def require_healthy(url: str, what: str, otherwise: str, timeout: float) -> None:
    ok, why = http_ok(url.rstrip("/") + "/health", timeout)
    if not ok:
        raise ServiceUnreachable(f"{what} is unreachable ({why}). Start it (`r1 services up`) or {otherwise}.")


def fail_fast_mlflow_client_env() -> dict[str, str]:
    """MLflow's HTTP client retries 7 times with exponential backoff (minutes) by default: a lost server
    should fail a stage in well under a minute, and a slow request should not hang it forever."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "30"),
    }


def resolve_tracking_uri(uri: str, project_dir: str | Path) -> str:
    """A relative `sqlite:///mlflow.db` means the project's file: make it absolute so every process agrees."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((Path(project_dir) / uri[len("sqlite:///") :]).resolve())
    if "://" not in uri and not uri.startswith("databricks"):
        return str((Path(project_dir) / uri).resolve())
    return uri


# ------------------------------------------------------------------------------------------------ overrides


def validate_overrides(params_path: str | Path, overrides: list[str]) -> None:
    """Raise ConfigError (the schema's own message) when the overrides make the params invalid."""
    load_config(params_path, overrides)


PARAMS_OVERLAY = Path(".r1") / "params-overlay.json"  # what a run with overrides changed, until it is undone
PARAMS_KEPT = Path(".r1") / "params.yaml.before-overrides"  # the file's own bytes, when they could not go back


@dataclass
class ParamsOverlay:
    """params.yaml with a run's overrides in it, for that run only (`params_overlay`)."""

    root: Path
    overrides: list[str]
    written: bool = False  # False: no override changed a value, the file was never touched
    outcome: str = "untouched"  # after the run: untouched | restored | kept (edited during the run)
    recovered: str | None = None  # what a dead run's overlay found on entry came to (undo_params_overlay)
    file_sha256: str | None = None  # the file's own bytes (what git holds), before the overlay


def params_overlay_record(root: str | Path) -> dict | None:
    """The record a run with overrides keeps while its overlay is in params.yaml (None: no overlay)."""
    import json

    try:
        return json.loads((Path(root) / PARAMS_OVERLAY).read_text())
    except (OSError, ValueError):
        return None


def undo_params_overlay(root: str | Path) -> str | None:
    """Put params.yaml back to its bytes from before a run's overrides, from that run's record; None when there
    is no record. "restored" when the file still held the overlay (or already its own bytes again); "kept" when
    someone edited it meanwhile: the edit stays and the old bytes go to .r1/params.yaml.before-overrides."""
    import base64
    import hashlib

    root = Path(root)
    record = params_overlay_record(root)
    if record is None:
        (root / PARAMS_OVERLAY).unlink(missing_ok=True)  # a record that cannot be read names nothing to undo
        return None
    path = root / record["params"]
    original = base64.b64decode(record["original_b64"])
    current = path.read_bytes() if path.is_file() else None
    if current is not None and hashlib.sha256(current).hexdigest() == record["overlay_sha256"]:
        _write_bytes(path, original, record.get("mode"))
        outcome = "restored"
    elif current == original:
        outcome = "restored"  # killed between writing the record and the overlay
    else:
        _write_bytes(root / PARAMS_KEPT, original, record.get("mode"))
        outcome = "kept"
    (root / PARAMS_OVERLAY).unlink(missing_ok=True)
    return outcome


def _write_bytes(path: Path, data: bytes, mode: int | None) -> None:
    from r1_pipeline.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)


@contextlib.contextmanager
def params_overlay(root: str | Path, overrides: list[str], params: str = "params.yaml"):
    """params.yaml with `key=value` overrides applied while the block runs, its exact bytes back afterwards.

    DVC reads params.yaml when it runs or restores a stage, so dvc.lock and the run cache record the values the
    stage really ran with (never the file's value for an overridden run); the file the user keeps in git is left
    as it was. Validated first: an invalid override raises ConfigError and nothing is written. The original bytes
    are recorded in .r1/params-overlay.json before the overlay is written and put back on every way out of the
    block (success, failure, SIGTERM and Ctrl-C, which Prefect's engine and `run_in_process_group` turn into
    exceptions); after a kill -9 the next run in the checkout puts them back on entry (`undo_params_overlay`).
    The caller holds the checkout (the workspace lock): one overlay at a time.
    """
    import base64
    import hashlib
    import json

    root = Path(root)
    path = root / params
    overlay = ParamsOverlay(root, list(overrides), recovered=undo_params_overlay(root))
    overlay.file_sha256 = sha256_file(path)
    if overrides:
        validate_overrides(path, overrides)
        raw = load_yaml(path)
        new = apply_overrides(raw, overrides)
        if new != raw:
            original = path.read_bytes()
            header = _leading_comments(original.decode())
            header.append(
                f"# overrides of one `r1 run` (pid {os.getpid()}), undone when it ends: {' '.join(overrides)}"
            )
            text = "\n".join(header) + "\n" + yaml.safe_dump(new, sort_keys=False, default_flow_style=False, width=110)
            write_text(
                root / PARAMS_OVERLAY,
                json.dumps(
                    {
                        "params": params,
                        "overrides": list(overrides),
                        "pid": os.getpid(),
                        "mode": path.stat().st_mode & 0o7777,
                        "overlay_sha256": hashlib.sha256(text.encode()).hexdigest(),
                        "original_b64": base64.b64encode(original).decode(),
                    }
                )
                + "\n",
            )
            _write_bytes(path, text.encode(), path.stat().st_mode & 0o7777)
            overlay.written = True
    try:
        yield overlay
    finally:
        if overlay.written:
            overlay.outcome = undo_params_overlay(root) or "restored"


def _leading_comments(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line)
    return out


def dvc_default_remote(root: str | Path) -> str | None:
    """The URL of the checkout's default DVC remote (`.dvc/config`, `.dvc/config.local` wins), None if none."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read([Path(root, ".dvc", "config"), Path(root, ".dvc", "config.local")])
    name = cfg.get("core", "remote", fallback=None)
    if not name:
        return None
    for section in (f"'remote \"{name}\"'", f'remote "{name}"'):  # DVC writes ['remote "name"']
        if cfg.has_option(section, "url"):
            return cfg.get(section, "url")
    return None


def workspace_key(root: str | Path) -> str:
    """What "one pipeline run at a time" is about: $R1_WORKSPACE_KEY when set; else the default DVC remote when
    it is shared storage (a URL with a scheme: s3://, gs://, ...): every checkout and pod that pushes there; else
    this host and the checkout's path (a local remote belongs to this checkout)."""
    import hashlib
    import socket

    if os.environ.get("R1_WORKSPACE_KEY"):
        return os.environ["R1_WORKSPACE_KEY"]
    remote = dvc_default_remote(root)
    if remote and re.match(r"^[a-z][a-z0-9+.-]*://", remote) and not remote.startswith("file://"):
        return "remote-" + hashlib.sha1(remote.rstrip("/").encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]}"


SHARED_REMOTE = "r1-shared"


def configure_shared_remote(root: str | Path, url: str, endpoint_url: str | None = None) -> str:
    """Make `url` (s3://bucket/path on any S3-compatible store) the checkout's default DVC remote, in
    `.dvc/config.local` (a pod's clone keeps the committed config untouched); returns the remote's name."""
    dvc = bin_path("dvc")
    cmds = [[dvc, "remote", "add", "--local", "-d", "-f", SHARED_REMOTE, url]]
    if endpoint_url:
        cmds.append([dvc, "remote", "modify", "--local", SHARED_REMOTE, "endpointurl", endpoint_url])
    for cmd in cmds:
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise OrchestrationError(f"{' '.join(cmd[1:])} failed: {(out.stderr or out.stdout).strip()}")
    return SHARED_REMOTE


def dvc_sync(
    root: str | Path,
    action: str,
    targets: Iterable[str] = (),
    timeout: float = 3600,
    remote: str | None = SHARED_REMOTE,
    with_deps: bool = False,
) -> str:
    """`dvc pull|push --run-cache` with the shared remote (`remote=None`: the checkout's default remote): the run
    cache (what each stage's command produced from which inputs) travels with the outputs, so a fresh clone
    restores every stage whose inputs match without running it (`dvc repro --pull`) and without a committed
    dvc.lock. Returns DVC's output; OrchestrationError on failure."""
    if action not in ("pull", "push"):
        raise ValueError(f"action must be pull or push, not {action!r}")
    cmd = [
        bin_path("dvc"),
        action,
        "--run-cache",
        *(["-r", remote] if remote else []),
        *(["--with-deps"] if with_deps else []),
        *targets,
    ]
    if action == "pull":
        cmd.insert(3, "--allow-missing")  # a first run finds an empty remote
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise OrchestrationError(
            f"{' '.join(cmd[1:])} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()[-2000:]}"
        )
    return out.stdout


def given_value(value: str | None) -> str | None:
    """A setting's value, or None when unset, empty, or a `{{ $VAR }}` that was unset when a Prefect deployment
    was made (it reaches the pod as written)."""
    return value if value and not value.startswith("{{") else None


def shared_remote_from_env(root: str | Path, url: str | None = None) -> str | None:
    """The shared remote (`url`, else $R1_DVC_REMOTE_URL; endpoint $R1_DVC_REMOTE_ENDPOINT_URL) configured as the
    checkout's default remote (`configure_shared_remote`); returns its name, None when neither is set."""
    url = given_value(url) or given_value(os.environ.get("R1_DVC_REMOTE_URL"))
    if not url:
        return None
    return configure_shared_remote(root, url, given_value(os.environ.get("R1_DVC_REMOTE_ENDPOINT_URL")))


def dvc_lock_entry(root: str | Path, stage: str) -> dict | None:
    """A stage's dvc.lock entry as lineage tags: {deps: {path: md5}, outs: {path: md5}, params_sha256}; None
    when dvc.lock has no entry for it (DVC writes the entry after the stage's command succeeded)."""
    import hashlib
    import json

    try:
        entry = (yaml.safe_load(Path(root, "dvc.lock").read_text()) or {}).get("stages", {}).get(stage)
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(entry, dict):
        return None

    def files(items):
        return {i["path"]: i.get("md5") or i.get("hash") or "" for i in items or [] if isinstance(i, dict)}

    params = json.dumps(entry.get("params") or {}, sort_keys=True, default=str)
    return {
        "deps": files(entry.get("deps")),
        "outs": files(entry.get("outs")),
        "params_sha256": hashlib.sha256(params.encode()).hexdigest(),
    }


__all__ = [
    "dvc_lock_entry",
    "dvc_default_remote",
    "workspace_key",
    "configure_shared_remote",
    "dvc_sync",
    "SHARED_REMOTE",
    "given_value",
    "shared_remote_from_env",
    "ConfigError",
    "OrchestrationError",
    "UnknownStageError",
    "ServiceUnreachable",
    "StageGraph",
    "stage_graph",
    "parse_dag_dot",
    "dvc_status",
    "repro_outcome",
    "run_in_process_group",
    "kill_process_group",
    "check_mlflow",
    "check_prefect_api",
    "params_overlay",
    "undo_params_overlay",
    "ParamsOverlay",
    "PARAMS_OVERLAY",
    "PARAMS_KEPT",
    "validate_overrides",
    "resolve_tracking_uri",
    "sha256_file",
    "params_profile",
    "bin_path",
    "subprocess_env",
    "fail_fast_mlflow_client_env",
    "ProcessResult",
    "WORKSPACE_LOCK",
    "acquire_workspace_lock",
    "clear_dead_dvc_locks",
]
