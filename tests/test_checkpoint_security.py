"""
dsla.checkpoint.io and AtomicCheckpointer: a weights file runs no code. ``.pkl`` files are read as
plain data (detectron2's model zoo format, numpy weights), torch files with ``weights_only``; a
crafted file stops train_net.py and demo.py with an error that names it, and only an explicit switch
(``MODEL.WEIGHTS_ALLOW_PICKLE``) reads it as detectron2 would.
"""

import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.modeling import build_model

from dsla import engine
from dsla.checkpoint import AtomicCheckpointer, UnsafePickleError, load_state_dict_file
from dsla.checkpoint.io import RestrictedUnpickler

from conftest import REPO_ROOT, load_config, shapes_env, short_training_opts

QUICKSTART = os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.yaml")
QUICKSTART_LAZY = os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.py")


class _CreatesFile:
    """Unpickled, creates ``path``: any code at all could run in its place."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


def _crafted(tmp_path, suffix):
    """A weights file in detectron2's format whose unpickling creates ``tmp_path/pwned``."""
    marker, path = tmp_path / "pwned", tmp_path / f"evil{suffix}"
    payload = {"model": {}, "__author__": "someone", "note": _CreatesFile(marker)}
    if suffix == ".pkl":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    return path, marker


@pytest.fixture(scope="module")
def quickstart_model():
    torch.manual_seed(0)
    return build_model(load_config("configs/DSLA/dsla_quickstart_shapes.yaml")).eval()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron2_model_zoo_pkl_with_numpy_weights_loads(tmp_path, quickstart_model, protocol):
    state = {k: v.numpy() for k, v in quickstart_model.state_dict().items()}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f, protocol=protocol)

    torch.manual_seed(1)
    model = build_model(load_config("configs/DSLA/dsla_quickstart_shapes.yaml"))
    AtomicCheckpointer(model).load(str(path))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, torch.from_numpy(state[key]), msg=key, rtol=0, atol=0)


def test_python2_pickles_of_plain_data_are_understood(tmp_path):
    # Protocol 2 with fix_imports writes Python 2's module names (__builtin__.set), as the MSRA
    # files were written; numpy scalars and arrays of any dtype come through.
    data = {
        "blobs": {"conv1_w": np.ones((2, 3), np.float32), "conv1_w_momentum": np.zeros(1)},
        "tags": {"a", "b"},
        "scale": np.float64(0.5),
    }
    raw = pickle.dumps(data, protocol=2, fix_imports=True)
    assert b"__builtin__" in raw
    path = tmp_path / "R-50.pkl"
    path.write_bytes(raw)
    with open(path, "rb") as f:
        loaded = RestrictedUnpickler(f, str(path), "switch").load()
    assert loaded["tags"] == {"a", "b"} and loaded["scale"] == 0.5
    np.testing.assert_array_equal(loaded["blobs"]["conv1_w"], data["blobs"]["conv1_w"])


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_crafted_weights_are_refused_by_the_checkpointer_with_the_file_and_global_named(
    tmp_path, quickstart_model, suffix
):
    path, marker = _crafted(tmp_path, suffix)
    with pytest.raises(UnsafePickleError) as e:
        AtomicCheckpointer(quickstart_model).load(str(path))
    assert not marker.exists()
    message = str(e.value)
    assert str(path) in message and "exec" in message
    assert "MODEL.WEIGHTS_ALLOW_PICKLE True" in message


def test_a_trusted_pkl_is_unpickled_as_detectron2_does_when_allowed(tmp_path, quickstart_model):
    path, marker = _crafted(tmp_path, ".pkl")
    AtomicCheckpointer(quickstart_model, allow_pickle=True).load(str(path))
    assert marker.exists()


def test_converters_refuse_crafted_checkpoints_and_name_their_switch(tmp_path):
    path, marker = _crafted(tmp_path, ".pth")
    with pytest.raises(UnsafePickleError, match="--allow-pickle"):
        load_state_dict_file(str(path))
    assert not marker.exists()


def _image(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    return path


def _run(script, args, shapes_root):
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, script), *args],
        cwd=REPO_ROOT,
        env=shapes_env(shapes_root),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
@pytest.mark.parametrize("script", ["train_net.py", "demo.py"])
def test_crafted_model_weights_stop_train_net_and_demo_before_any_code_runs(
    tmp_path, shapes_root, script, suffix
):
    path, marker = _crafted(tmp_path, suffix)
    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(path), "OUTPUT_DIR", str(tmp_path / "out")]
    if script == "train_net.py":
        args = ["--eval-only", "--config-file", QUICKSTART, *opts]
    else:
        image = _image(tmp_path)
        args = ["--config-file", QUICKSTART, "--input", str(image), "--output", str(tmp_path)]
        args += ["--opts", *opts]
    proc = _run(script, args, shapes_root)
    assert proc.returncode != 0
    assert not marker.exists()
    last_line = proc.stderr.strip().splitlines()[-1]
    assert f"UnsafePickleError: Refusing to load {path}" in last_line, proc.stderr[-3000:]
    assert "exec" in last_line and "MODEL.WEIGHTS_ALLOW_PICKLE True" in last_line


def test_lazyconfig_init_checkpoint_is_read_as_data(tmp_path, shapes_root):
    path, marker = _crafted(tmp_path, ".pkl")
    args = engine.default_argument_parser().parse_args(
        [
            "--eval-only",
            "--config-file",
            QUICKSTART_LAZY,
            f"train.init_checkpoint={path}",
            f"train.output_dir={tmp_path / 'out'}",
            "train.device=cpu",
        ]
    )
    with pytest.raises(UnsafePickleError, match="train.init_checkpoint_allow_pickle=True"):
        engine.main(args)
    assert not marker.exists()


def test_training_resumes_from_its_own_checkpoints_read_as_data(tmp_path, shapes_root, caplog):
    def args(max_iter, *extra):
        return engine.default_argument_parser().parse_args(
            [
                *extra,
                "--config-file",
                QUICKSTART,
                "MODEL.DEVICE",
                "cpu",
                "MODEL.WEIGHTS",
                "",
                *short_training_opts(tmp_path / "out", max_iter),
            ]
        )

    engine.main(args(2))
    # Model, optimizer, scheduler and trainer state: tensors, numbers and plain containers only.
    first = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)
    trainer = first["trainer"]
    assert first["iteration"] == 1
    assert "optimizer" in trainer["_trainer"] and "LRScheduler" in trainer["hooks"]
    # detectron2's setup_logger keeps its loggers from propagating to the root.
    logger = logging.getLogger("detectron2")
    logger.addHandler(caplog.handler)
    try:
        engine.main(args(3, "--resume"))
    finally:
        logger.removeHandler(caplog.handler)
    assert "Starting training from iteration 2" in caplog.text
    assert torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)["iteration"] == 2
