"""tools/gpu_check.sh where there is no GPU: it says so, and runs and writes nothing."""

import os
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "tools", "gpu_check.sh")


def _gpu_check(*args):
    # The GPU hidden, so that this holds on a GPU machine too (where the check runs this test).
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        ["bash", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_gpu_check_without_a_gpu_says_so_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _gpu_check(str(out))
    assert proc.returncode == 2, proc.stderr
    assert "gpu_check: no CUDA device" in proc.stderr
    assert "nothing was run" in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()


def test_gpu_check_without_an_output_folder_prints_its_usage():
    proc = _gpu_check()
    assert proc.returncode == 2
    assert "usage: bash tools/gpu_check.sh OUTDIR" in proc.stderr
