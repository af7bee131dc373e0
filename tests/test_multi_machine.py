"""
detectron2's multi-machine launch on one host: two "machines" (``--num-machines 2 --machine-rank
{0,1}``) of one worker each train the quick start together over ``tcp://127.0.0.1``, on the CPU with
the GPU hidden.
"""

import os
import signal
import socket
import subprocess
import sys

import torch

from conftest import REPO_ROOT, shapes_env, short_training_opts

TIMEOUT_S = 240


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_on_one_host_train_the_quick_start(shapes_root, tmp_path):
    out = tmp_path / "out"
    # The quick start asks for CUDA (detectron2's default): without a GPU every machine falls back
    # to the CPU.
    env = {**shapes_env(shapes_root), "CUDA_VISIBLE_DEVICES": ""}
    dist_url = f"tcp://127.0.0.1:{_free_port()}"
    procs = []
    for rank in range(2):
        command = [
            sys.executable,
            os.path.join(REPO_ROOT, "train_net.py"),
            "--num-machines",
            "2",
            "--machine-rank",
            str(rank),
            "--num-gpus",
            "1",
            "--dist-url",
            dist_url,
            "--config-file",
            os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.yaml"),
            "MODEL.DEVICE",
            "cuda",
            "INPUT.MIN_SIZE_TRAIN",
            "(96,)",
            "INPUT.MAX_SIZE_TRAIN",
            "96",
            *short_training_opts(out, 3, ims_per_batch=4),
        ]
        log = open(tmp_path / f"rank{rank}.log", "w")
        # A session of its own, so that on a timeout the spawned worker is killed with its launcher.
        procs.append(
            subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
    try:
        for proc in procs:
            proc.wait(timeout=TIMEOUT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    logs = [(tmp_path / f"rank{rank}.log").read_text() for rank in range(2)]
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank}:\n{logs[rank][-5000:]}"
    assert "World size: 2" in logs[0]
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 2
