"""
A config that asks for CUDA runs on the CPU when no GPU is available, with one warning;
``--require-gpu`` makes a missing GPU an error instead. The GPU is hidden from the training process,
so this also holds on a GPU machine.
"""

import os
import subprocess
import sys

import pytest
import torch

from dsla import engine, get_dsla_cfg
from dsla.engine import resolve_device

from conftest import REPO_ROOT, shapes_env, short_training_opts

QUICKSTART = os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.yaml")
NO_CUDA = "CUDA is not available"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_device_becomes_cpu_without_cuda(no_cuda, device):
    assert resolve_device(device) == "cpu"
    assert get_dsla_cfg(QUICKSTART, ["MODEL.DEVICE", device]).MODEL.DEVICE == "cpu"


def test_cpu_device_stays_cpu(no_cuda):
    assert resolve_device("cpu", require_gpu=True) == "cpu"


def test_require_gpu_makes_missing_cuda_an_error(no_cuda):
    with pytest.raises(RuntimeError, match=f"--require-gpu.*{NO_CUDA}"):
        get_dsla_cfg(QUICKSTART, ["MODEL.DEVICE", "cuda"], require_gpu=True)


def test_cuda_device_is_kept_when_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:0") == "cuda:0"


def _train_net(shapes_root, out, *extra):
    env = {**shapes_env(shapes_root), "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable,
        os.path.join(REPO_ROOT, "train_net.py"),
        *extra,
        "--config-file",
        QUICKSTART,
        "MODEL.DEVICE",
        "cuda",
        *short_training_opts(out, 2),
    ]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_train_net_trains_a_cuda_config_on_the_cpu_without_a_gpu(shapes_root, tmp_path):
    out = tmp_path / "out"
    proc = _train_net(shapes_root, out)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert log.count(NO_CUDA) == 1, log[-5000:]
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 1


def test_train_net_with_require_gpu_fails_clearly_without_a_gpu(no_cuda, shapes_root, tmp_path):
    args = engine.default_argument_parser().parse_args(
        [
            "--require-gpu",
            "--config-file",
            QUICKSTART,
            "MODEL.DEVICE",
            "cuda",
            "OUTPUT_DIR",
            str(tmp_path),
        ]
    )
    with pytest.raises(
        RuntimeError, match=f"asks for device 'cuda' and --require-gpu was given, but {NO_CUDA}"
    ):
        engine.main(args)
    assert not (tmp_path / "last_checkpoint").exists()


def test_lazyconfig_keeps_the_configs_device_until_it_runs(no_cuda, shapes_root, tmp_path):
    # The quick start asks for detectron2's default device, cuda. Loading its LazyConfig must not
    # resolve that already, or --require-gpu could not see the request.
    lazy = os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.py")
    args = engine.default_argument_parser().parse_args(
        [
            "--require-gpu",
            "--config-file",
            lazy,
            "train.max_iter=1",
            "train.eval_period=0",
            f"train.output_dir={tmp_path}",
        ]
    )
    with pytest.raises(
        RuntimeError, match=f"asks for device 'cuda' and --require-gpu was given, but {NO_CUDA}"
    ):
        engine.main(args)
    assert not (tmp_path / "last_checkpoint").exists()
