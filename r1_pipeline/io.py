"""Atomic file writes: a reader (or a killed stage) never sees a half-written output.

An output is written under a temporary sibling name (`.<name>.r1tmp-…`) and moved over the real name in one
step: a file by `os.replace`, a folder by an atomic exchange of the two folders (Linux `renameat2` with
RENAME_EXCHANGE), so `path` is always either the old complete output or the new complete one. Where the
exchange is unavailable the old folder is renamed to `.<name>.r1old` first; if a kill falls between the two
renames, the next write of the same path puts the old folder back before it starts. Temporary siblings left by
a killed run are removed by the next write of the same path.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def tmp_prefix(path: Path) -> str:
    return f".{path.name}.r1tmp-"


def old_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.r1old")


def clean_stale_siblings(path: str | Path) -> None:
    """Undo what a killed write of `path` left: restore a swapped-out old folder, remove temporaries."""
    path = Path(path)
    old = old_path(path)
    if old.exists() and not path.exists():
        old.rename(path)  # killed between the two renames: the old output is the complete one
    shutil.rmtree(old, ignore_errors=True)
    if path.parent.exists():
        for stale in path.parent.glob(tmp_prefix(path) + "*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Move the complete folder `src` over `dst` so that `dst` is never missing nor a mix of the two."""
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        src.rename(dst)
    elif _exchange(src, dst):
        shutil.rmtree(src)  # now holds the old output
    else:
        old = old_path(dst)
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        src.rename(dst)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_path(path: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success move it over `path`, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(path)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(path), dir=path.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    else:
        fd, name = tempfile.mkstemp(prefix=tmp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs should be as readable as any other
    try:
        yield tmp
        if is_dir:
            replace_dir(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    """Read JSONL; a bad line raises ValueError naming the file and line number."""
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
    return rows


def sha256_file(path: str | Path) -> str | None:
    """sha256 of a file, read in 1 MiB blocks (model files are large); None when it is not a file."""
    import hashlib

    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
