"""What every `python -m tasks.<stage>` shares: arguments, config validation, clear errors, tracking, and a
process lifecycle that survives kills.

- **Exit codes**: 0 success; 2 invalid params, a missing input or bad data (StageError), or the stage already
  running in this workspace: nothing to retry; 1 any other failure; 143 on SIGTERM. Through `accelerate
  launch` a rank's exit 2 would come back as accelerate's 1: each rank writes its 2 into a file the launcher
  names (R1_RANK_EXIT_FILE) and the launcher returns 2 when one did.
- **One run of a stage per workspace**: the stage holds an exclusive `flock` on `.r1/locks/<stage>.lock`
  (relative to the working directory: the project root) from config validation to exit, with its pid, host,
  start time and command written inside. A second run of the same stage exits 2 at once, naming the holder.
  The OS drops the lock when the holder dies, so a kill -9 never leaves a stale lock. Only the top process
  takes it (the launcher, not the ranks it relaunches). The holder also records its MLflow run there: the next
  run of the stage ends a run that a killed holder left RUNNING (KILLED, `r1.status=died`).
- **A stage dies with whoever started it**: the flow passes its own pid and start time (R1_PARENT_PID,
  R1_PARENT_START, R1_PARENT_PGID; ranks get the launcher's as R1_LAUNCHER_*). A daemon thread checks every
  0.5 s that they are still the same processes (a pid and its start time in /proc: a reused pid is not the
  parent). When one is gone, the stage marks its MLflow run KILLED (tag `r1.status=orphaned`, bounded to a
  few seconds), prints one line to stderr and SIGKILLs its whole process group (the stage, dataloader
  workers; each accelerate rank runs in a session of its own and watches for itself).
- **MLflow status**: an exception in the body ends the run FAILED (mlflow.start_run's context), SIGTERM and
  Ctrl-C end it KILLED (the SIGTERM handler below raises StageTerminated so the context exits).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from r1_pipeline import paths
from r1_pipeline.config import Config, ConfigError, load_config
from r1_pipeline.errors import StageError
from r1_pipeline.io import write_json


class StageTerminated(BaseException):
    """SIGTERM reached the stage: raised in the main thread so the MLflow run ends KILLED and locks are let go.

    A BaseException, like KeyboardInterrupt: `except Exception` in library code must not swallow it.
    """


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parse_args(stage: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=f"Run the {stage} stage.")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one param for this run (repeatable), e.g. --set grpo.max_steps=10",
    )
    return parser.parse_args(argv)


LAUNCHED_ENV = "R1_LAUNCHED"
RANK_EXIT_ENV = "R1_RANK_EXIT_FILE"  # where a relaunched rank records that it exited 2
PARENT_PID_ENV, PARENT_START_ENV, PARENT_PGID_ENV = "R1_PARENT_PID", "R1_PARENT_START", "R1_PARENT_PGID"
LAUNCHER_PID_ENV, LAUNCHER_START_ENV = "R1_LAUNCHER_PID", "R1_LAUNCHER_START"
LOCK_DIR = Path(".r1") / "locks"  # relative to the working directory (the project root, where dvc runs stages)


def launch_command(cfg: Config, stage: str, argv: list[str]) -> list[str] | None:
    """`accelerate launch` command for a stage whose params ask for several processes or DeepSpeed, else None.

    dvc.yaml always calls `python -m tasks.<stage>`; the stage relaunches itself through accelerate when
    needed, so the graph does not change with the profile. DeepSpeed needs a launcher even for one process.
    """
    from r1_pipeline.config import PROJECT_ROOT, TrainerParams
    from r1_pipeline.modeling import resolve_device

    section = getattr(cfg, stage, None)
    if not isinstance(section, TrainerParams) or is_relaunched():
        return None
    if section.num_processes == 1 and section.deepspeed == "none":
        return None
    infra = PROJECT_ROOT / "infra"
    if section.accelerate_config:
        config = Path(section.accelerate_config)
    elif resolve_device(cfg.project.device) == "cpu":
        config = infra / "accelerate" / "cpu_zero2.yaml"  # without deepspeed: --cpu below makes it plain DDP
    else:
        config = (
            infra
            / "accelerate"
            / ("multi_gpu.yaml" if section.deepspeed == "none" else f"multi_gpu_{section.deepspeed}.yaml")
        )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        str(section.num_processes),
    ]
    if section.deepspeed != "none":
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(infra / "deepspeed" / f"{section.deepspeed}.json")]
    elif resolve_device(cfg.project.device) == "cpu":
        cmd += ["--cpu"]
    return cmd + ["-m", f"tasks.{stage}", *argv]


def is_relaunched() -> bool:
    """A rank started by `accelerate launch` (by us, or by a user's own launcher)."""
    return bool(os.environ.get(LAUNCHED_ENV)) or "LOCAL_RANK" in os.environ


# ------------------------------------------------------------------------------------ processes and their start


def process_start_time(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, /proc/<pid>/stat field 22); None if there is no such live
    process (absent or a zombie) or no /proc (then identity checks fall back to the pid alone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def process_alive(pid: int, start: str | None = None) -> bool:
    """Is `pid` still the process that started at `start`? A pid the kernel gave to a new process is not."""
    if Path("/proc/self/stat").exists():
        now = process_start_time(pid)
        return now is not None and (not start or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_env(pid: int | None = None) -> dict[str, str]:
    """What the flow hands a stage so it can tell when the flow is gone (see ParentWatchdog)."""
    pid = os.getpid() if pid is None else pid
    return {
        PARENT_PID_ENV: str(pid),
        PARENT_START_ENV: process_start_time(pid) or "",
        PARENT_PGID_ENV: str(os.getpgid(pid)),
    }


_PR_SET_PDEATHSIG = 1


def parent_death_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the kernel send `sig` to the child when the process starting it dies
    (Linux prctl PR_SET_PDEATHSIG); None where that does not exist.

    Strictly it fires when the *thread* that forked exits: callers start the child and wait for it in the same
    thread. libc is resolved here, before the fork: the child only makes one foreign call, then checks that
    its parent did not die before the call took effect.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody would signal us
            os.kill(os.getpid(), int(sig))

    return preexec


class ParentWatchdog:
    """A daemon thread that ends this process group when a process it depends on is gone.

    `watched` is a list of (what, pid, start time). Checked every `interval` s; on loss: `on_orphan(message)`
    (bounded by `grace_s`: it marks the MLflow run), one line on stderr, then SIGKILL to the process group,
    unless this process still shares the group of the lost parent (`parent_pgid`: then only itself).
    """

    def __init__(
        self,
        stage: str,
        watched: list[tuple[str, int, str | None]],
        interval: float = 0.5,
        on_orphan: Callable[[str], None] | None = None,
        grace_s: float = 5.0,
        parent_pgid: int | None = None,
        kill: Callable[[], None] | None = None,
    ):
        self.stage, self.watched, self.interval = stage, watched, interval
        self.on_orphan, self.grace_s, self.parent_pgid = on_orphan, grace_s, parent_pgid
        self.kill = kill or self._kill_group
        self._stop = threading.Event()
        self._once = threading.Lock()  # the thread and the main thread may both find the loss: act once
        self.thread = threading.Thread(target=self._loop, name=f"r1-parent-watchdog-{stage}", daemon=True)

    @classmethod
    def from_env(cls, stage: str, **kwargs) -> ParentWatchdog | None:
        watched = []
        for what, pid_env, start_env in (
            ("the flow that started it", PARENT_PID_ENV, PARENT_START_ENV),
            ("its launcher", LAUNCHER_PID_ENV, LAUNCHER_START_ENV),
        ):
            if os.environ.get(pid_env, "").isdigit():
                watched.append((what, int(os.environ[pid_env]), os.environ.get(start_env) or None))
        if not watched:
            return None
        pgid = os.environ.get(PARENT_PGID_ENV, "")
        return cls(stage, watched, parent_pgid=int(pgid) if pgid.isdigit() else None, **kwargs)

    def start(self) -> ParentWatchdog:
        lost = self.lost()
        if lost:  # already gone before we started watching: do not start training at all
            self.orphaned(lost)
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def lost(self) -> str | None:
        for what, pid, start in self.watched:
            if not process_alive(pid, start):
                return f"{what} (pid {pid}) is gone"
        return None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            lost = self.lost()
            if lost:
                self.orphaned(lost)
                return

    def orphaned_if_lost(self) -> None:
        """On an error: when a watched parent is gone, the error is its death showing (a print into its dead
        pipe), not a failure: mark the run orphaned and kill (never returns). Otherwise return."""
        if why := self.lost():
            self.orphaned(why)

    def orphaned(self, why: str) -> None:
        """Mark the run (bounded), say why, kill the process group: the end of this process."""
        with self._once:
            self._orphaned(why)

    def _orphaned(self, why: str) -> None:
        # stdout/stderr are usually a pipe to the parent that is gone: any print on the way out (MLflow's client
        # prints "View run ... at: <url>" when it ends a run on a tracking server) would raise BrokenPipeError.
        sys.stdout, sys.stderr = _WritesNeverRaise(sys.stdout), _WritesNeverRaise(sys.stderr)
        if self.on_orphan is not None:
            # Bounded: a hung tracking server must not keep an orphan alive.
            t = threading.Thread(target=self._call_on_orphan, args=(why,), daemon=True)
            t.start()
            t.join(self.grace_s)
        _say(f"error: {self.stage}: {why}: stopping this stage (process group {os.getpgrp()})")
        self.kill()

    def _call_on_orphan(self, why: str) -> None:
        try:
            self.on_orphan(why)
        except Exception as exc:  # noqa: BLE001 (the kill must happen whatever tracking says)
            _say(f"warning: {self.stage}: could not mark the MLflow run: {exc}")

    def _kill_group(self) -> None:
        group = os.getpgrp()
        if self.parent_pgid is not None and group == self.parent_pgid:
            os.kill(os.getpid(), signal.SIGKILL)  # started without a session of its own: not the parent's group
        os.killpg(group, signal.SIGKILL)


class _WritesNeverRaise(io.TextIOBase):
    """A text stream whose writes into a dead pipe (or a closed file) are dropped instead of raising."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass


def _say(line: str) -> None:
    """One line on stderr, which may be a pipe to the dead parent: a failed write must not stop the kill."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


# ------------------------------------------------------------------------------------------ the workspace lock


class HolderLock:
    """An exclusive, non-blocking `flock` on one file, with a JSON line about its holder written inside.

    The kernel releases a flock when the last descriptor of the holder goes away (exit, kill -9, OOM), so the
    lock can never go stale. The file itself stays: while held it names the holder; `release()` empties it, so
    a record found by the next holder (`previous`) means the last one died without cleaning up.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fd: int | None = None
        self.previous: dict | None = None
        self.info: dict = {}
        self._mutex = threading.Lock()

    def acquire(self, info: dict) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was removed or replaced while we locked it: lock the file that is there now
        self.fd = fd
        self.previous = _parse_record(os.pread(fd, 1 << 16, 0))
        self.info = dict(info)
        self._write()
        return True

    def update(self, **fields) -> None:
        with self._mutex:
            self.info.update(fields)
            if self.fd is not None:
                self._write()

    def _write(self) -> None:
        data = (json.dumps(self.info, sort_keys=True) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def held(self) -> bool:
        """Whether some process holds the lock now: a shared-lock probe that writes nothing."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's shared lock
        return False

    def holder(self, wait_s: float = 1.0) -> dict | None:
        """The record of whoever holds the lock now (it writes it right after locking: wait a moment for it)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                record = _parse_record(self.path.read_bytes())
            except OSError:
                record = None
            if record is not None or time.monotonic() >= deadline:
                return record
            time.sleep(0.05)

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        with self._mutex:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> HolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _parse_record(data: bytes) -> dict | None:
    try:
        record = json.loads(data.decode() or "null")
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def holder_info(**extra) -> dict:
    """Who holds a lock: pid, host, start time (epoch and local clock) and command line."""
    now = time.time()
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": now,
        "started_local": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
        "command": " ".join(_command_line()),
        **extra,
    }


def _command_line() -> list[str]:
    if sys.argv and sys.argv[0].endswith(".py") and "__main__" in sys.modules:
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is not None and spec.name:  # `python -m tasks.sft` reads better than its file path
            return ["python", "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    return [Path(sys.executable).name, *sys.argv]


def describe_holder(record: dict | None, path: Path, held: bool = True) -> str:
    """`pid 1234 since 12:00:01, python -m tasks.sft` (what the lock file says about its holder)."""
    if not record:
        return f"holder unknown: {path}"
    since = time.strftime("%H:%M:%S", time.localtime(record["started"])) if record.get("started") else "?"
    here = record.get("host") in (None, socket.gethostname())
    text = (
        f"pid {record.get('pid', '?')}{'' if here else ' on ' + str(record['host'])} since {since}, "
        f"{record.get('command') or '?'}"
    )
    if held and here and isinstance(record.get("pid"), int) and not process_alive(record["pid"]):
        # The holder died but a process it forked (a dataloader worker) still has the lock file open.
        text += f"; that process is gone but a child of it still holds {path}"
    return text


def stage_lock(stage: str) -> HolderLock:
    return HolderLock(LOCK_DIR / f"{stage}.lock")


# --------------------------------------------------------------------------------------------------- run_stage


def run_stage(stage: str, body: Callable[[Config], dict | None], argv: list[str] | None = None) -> int:
    """Validate params, take the stage's workspace lock, open the stage's MLflow run, run `body(cfg)`, log the
    metrics it returns. See the module docstring for the exit codes, the lock and the parent watchdog.
    """
    args = parse_args(stage, argv)
    try:
        cfg = load_config(args.params, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit_permanent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    lock = None
    if not is_relaunched():
        # Before anything is written, and in the launcher rather than the ranks: the launcher lives as long as
        # the ranks do, and one lock per stage run is what a second run must see.
        lock = stage_lock(stage)
        if not lock.acquire(holder_info(stage=stage)):
            print(
                f"error: {stage}: already running in this workspace ({describe_holder(lock.holder(), lock.path)});"
                " wait for it or kill it",
                file=sys.stderr,
            )
            return 2
        if lock.previous:
            previous = describe_holder(lock.previous, lock.path, held=False)
            print(f"{stage}: the previous run here ({previous}) did not exit cleanly", flush=True)
            _close_dead_run(stage, lock.previous)
    from r1_pipeline import tracking

    run_ref = {"run_id": os.environ.get("MLFLOW_RUN_ID")}  # mlflow.start_run consumes the variable: keep it
    watchdog = ParentWatchdog.from_env(stage, on_orphan=lambda why: _mark_orphaned(cfg, run_ref, why))
    restore_term = _raise_on_sigterm()
    try:
        if watchdog is not None:
            watchdog.start()
        launch = launch_command(cfg, stage, list(argv) if argv is not None else sys.argv[1:])
        if launch:
            return _launch(cfg, stage, launch)
        return _run_body(stage, body, cfg, run_ref, tracking, lock, watchdog)
    except StageTerminated:
        print(f"error: {stage}: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BaseException:
        # The flow's death often shows first as an error here rather than in the watchdog's next poll.
        if watchdog is not None:
            watchdog.orphaned_if_lost()
        raise
    finally:
        if watchdog is not None:
            watchdog.stop()
        restore_term()
        if lock is not None:
            lock.release()


def _run_body(stage, body, cfg, run_ref, tracking, lock: HolderLock | None, watchdog=None) -> int:
    seed_everything(cfg.project.seed)
    start = time.time()
    try:
        with tracking.stage_run(stage, cfg) as run:
            if run is not None:
                run_ref["run_id"] = run.info.run_id
                if lock is not None:  # should this process die outright, the next run closes this MLflow run
                    lock.update(mlflow_run_id=run.info.run_id, tracking_uri=tracking.tracking_uri(cfg))
            try:
                metrics = body(cfg) or {}
            except BaseException:
                # Inside the run's context: leaving it would end the run FAILED, racing the watchdog's KILLED.
                if watchdog is not None:
                    watchdog.orphaned_if_lost()
                raise
            metrics[f"{stage}_seconds"] = time.time() - start
            tracking.log_metrics(metrics)
            if tracking.is_main_process():
                # The stage's summary metrics, declared in dvc.yaml so `dvc metrics show` lists them.
                write_json(paths.metrics_file(stage), metrics)
    except StageError as exc:
        print(f"error: {stage}: {exc}", file=sys.stderr)
        return _exit_permanent()
    print(f"{stage}: done in {time.time() - start:.1f}s")
    _end_process_group()
    return 0


def _end_process_group() -> None:
    """A rank of a multi-process stage waits for the others (rank 0 may still be writing), then takes the
    process group down before the interpreter exits: a rank exiting with gloo's threads alive aborts with
    "terminate called without an active exception" (SIGABRT, seen under load)."""
    torch = sys.modules.get("torch")  # a stage that never imported torch has no process group
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _launch(cfg: Config, stage: str, launch: list[str]) -> int:
    """Run the ranks through `accelerate launch`; 2 when any rank exited 2 (accelerate itself says 1)."""
    print(f"{stage}: launching {cfg_processes(cfg, stage)} processes: {' '.join(launch)}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"r1-{stage}-") as tmp:
        exit_file = Path(tmp) / "rank-exit"
        me = os.getpid()
        env = {
            **os.environ,
            LAUNCHED_ENV: "1",
            RANK_EXIT_ENV: str(exit_file),
            LAUNCHER_PID_ENV: str(me),
            LAUNCHER_START_ENV: process_start_time(me) or "",
        }
        # SIGTERM to accelerate when this launcher dies (an OOM kill): it then stops the ranks it started.
        proc = subprocess.Popen(launch, env=env, preexec_fn=parent_death_preexec(signal.SIGTERM))
        try:
            code = proc.wait()
        except BaseException:
            # SIGTERM or Ctrl-C here: accelerate stops its ranks (each in a session of its own) when it gets
            # SIGTERM; subprocess.call would SIGKILL it instead and leave the ranks to their watchdogs.
            _stop_child(proc)
            raise
        if code != 0 and exit_file.exists() and exit_file.read_text().strip() == "2":
            print(
                f"error: {stage}: a rank exited 2 (invalid params or input; see its error above): exit 2, "
                f"not accelerate's {code}",
                file=sys.stderr,
            )
            return 2
    return code


def _stop_child(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            proc.send_signal(sig)
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
        except BaseException:  # a second SIGTERM while we wait: stop waiting, kill
            proc.kill()
            return


def _exit_permanent() -> int:
    """Exit code 2; in a relaunched rank also recorded for the launcher, which would otherwise see 1."""
    if os.environ.get(RANK_EXIT_ENV):
        try:
            Path(os.environ[RANK_EXIT_ENV]).write_text("2\n")
        except OSError:
            pass
    return 2


def _raise_on_sigterm() -> Callable[[], None]:
    """SIGTERM raises StageTerminated in the main thread (Python's default would exit without any cleanup)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        return lambda: None
    owner = os.getpid()

    def on_term(signum, frame):
        if os.getpid() != owner:  # a forked child (dataloader worker) inherited this handler: plain exit
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise StageTerminated(signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _close_dead_run(stage: str, previous: dict) -> None:
    """The last run of this stage here died outright (SIGKILL, OOM) with its MLflow run open: a run nobody
    will ever end says RUNNING forever. Under the flow the flow has ended it already (FAILED); started by hand
    (or by `dvc repro`) nobody has: end it KILLED, tagged `r1.status=died`."""
    run_id, uri = previous.get("mlflow_run_id"), previous.get("tracking_uri")
    if not run_id or not uri:
        return
    try:
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "r1.status", "died")
            client.set_terminated(run_id, "KILLED")
            print(f"{stage}: ended its MLflow run {run_id} (still RUNNING) as KILLED", flush=True)
    except Exception as exc:  # noqa: BLE001 (bookkeeping of a dead run must not stop this one)
        print(f"warning: {stage}: could not close the previous MLflow run {run_id}: {exc}", flush=True)


def _mark_orphaned(cfg: Config, run_ref: dict, why: str) -> None:
    """The watchdog's last act: the stage's MLflow run ends KILLED, tagged `r1.status=orphaned`."""
    run_id = run_ref.get("run_id")
    if not run_id:
        return
    from r1_pipeline import tracking

    if not tracking.is_main_process():
        return
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(tracking.tracking_uri(cfg))
    client.log_batch(run_id, tags=[RunTag("r1.status", "orphaned"), RunTag("r1.orphaned_because", why)])
    client.set_terminated(run_id, "KILLED")


def cfg_processes(cfg: Config, stage: str) -> int:
    return getattr(getattr(cfg, stage), "num_processes", 1)


def main_for(stage: str, body: Callable[[Config], dict | None]) -> None:
    """`if __name__ == "__main__": main_for("sft", run)` in a stage module."""
    sys.exit(run_stage(stage, body, sys.argv[1:]))
