"""The engine under AddressSanitizer + UndefinedBehaviorSanitizer (slow: a Debug build and ~1.5M random
agent-steps over every preset, edge-case maps, hand-made extreme specs and threaded calls; about two
minutes on 2 cores). See cpp/tests/run_sanitizers.sh and cpp/tests/stress.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _missing_toolchain() -> str | None:
    for tool in ("cmake", "g++"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    lib = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not Path(lib).is_file():
        return "g++ has no libasan"
    return None


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_stress_under_address_and_undefined_behaviour_sanitizers():
    missing = _missing_toolchain()
    if missing:
        pytest.skip(f"sanitizer build needs cmake and g++ with libasan: {missing}")
    run = subprocess.run(["bash", str(ROOT / "cpp/tests/run_sanitizers.sh"), sys.executable, "--steps", "3000"],
                         cwd=ROOT, capture_output=True, text=True)
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"sanitizer stress failed (exit {run.returncode}):\n{out[-6000:]}"
    assert "stress passed" in run.stdout, out[-6000:]
