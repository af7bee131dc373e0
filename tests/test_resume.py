"""
Crash-safe checkpoints: a save that fails midway leaves the previous checkpoint and
``last_checkpoint`` intact, and a training run killed with SIGKILL resumes with ``--resume`` from
its last checkpoint and finishes.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from detectron2.modeling import build_model

import dsla.checkpoint.atomic as atomic
from dsla import engine
from dsla.checkpoint import AtomicCheckpointer

from conftest import REPO_ROOT, load_config, shapes_env, short_training_opts

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"


def _checkpointer(save_dir):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return AtomicCheckpointer(model, str(save_dir), optimizer=optimizer)


def _snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def test_save_writes_a_loadable_checkpoint_and_tags_it(tmp_path):
    checkpointer = _checkpointer(tmp_path)
    checkpointer.save("model_0000009", iteration=9)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"

    restored = _checkpointer(tmp_path)
    with torch.no_grad():
        restored.model.weight.zero_()
    extra = restored.resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    torch.testing.assert_close(restored.model.weight, checkpointer.model.weight)


def test_checkpoint_gets_the_permissions_the_umask_allows(tmp_path):
    umask = os.umask(0o022)
    try:
        _checkpointer(tmp_path).save("model_final")
    finally:
        os.umask(umask)
    assert (tmp_path / "model_final.pth").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["model_0000019", "model_0000009"], ids=["new_name", "same_name"])
def test_failure_midway_through_a_save_leaves_the_previous_checkpoint_intact(
    tmp_path, monkeypatch, name
):
    checkpointer = _checkpointer(tmp_path)
    checkpointer.save("model_0000009", iteration=9)
    before = _snapshot(tmp_path)

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first bytes of a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with torch.no_grad():
        checkpointer.model.weight.add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save(name, iteration=19)

    assert _snapshot(tmp_path) == before  # same files, same bytes, no temporary file left behind
    monkeypatch.undo()
    assert _checkpointer(tmp_path).resume_or_load("", resume=True)["iteration"] == 9


def test_failure_while_tagging_leaves_last_checkpoint_naming_a_complete_file(tmp_path, monkeypatch):
    checkpointer = _checkpointer(tmp_path)
    checkpointer.save("model_0000009", iteration=9)
    replace = os.replace

    def fail_on_last_checkpoint(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("Input/output error")
        replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", fail_on_last_checkpoint)
    with pytest.raises(OSError, match="Input/output error"):
        checkpointer.save("model_0000019", iteration=19)
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000009.pth",
        "model_0000019.pth",
    ]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"


def test_trainer_checkpoints_atomically(shapes_root, tmp_path):
    cfg = load_config(
        QUICKSTART,
        [
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ],
    )
    trainer = engine.Trainer(cfg)
    assert isinstance(trainer.checkpointer, AtomicCheckpointer)
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert len(periodic) == 1 and periodic[0].checkpointer is trainer.checkpointer


def _train_command(out, *extra):
    return [
        sys.executable,
        os.path.join(REPO_ROOT, "train_net.py"),
        *extra,
        "--config-file",
        os.path.join(REPO_ROOT, QUICKSTART),
        "MODEL.DEVICE",
        "cpu",
        "SOLVER.CHECKPOINT_PERIOD",
        "5",
        *short_training_opts(out, 30, ims_per_batch=4, warmup_iters=5),
    ]


def test_run_killed_after_a_checkpoint_resumes_from_it_and_finishes(shapes_root, tmp_path):
    out = tmp_path / "out"
    env = shapes_env(shapes_root)
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            _train_command(out), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 120
            while (
                not (out / "last_checkpoint").exists()
                and first.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
        finally:
            first.kill()  # SIGKILL: no handler runs, nothing is flushed or cleaned up
            first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    assert not (out / "model_final.pth").exists()

    # Whatever iteration the kill hit, last_checkpoint names a complete checkpoint.
    last = (out / "last_checkpoint").read_text()
    saved_iter = torch.load(out / last, weights_only=False)["iteration"]
    assert saved_iter % 5 == 4 and saved_iter < 29

    second = subprocess.run(
        _train_command(out, "--resume"),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-5000:]
    log = second.stdout + second.stderr
    assert f"Loading from {out / last}" in log
    assert f"Starting training from iteration {saved_iter + 1}" in log

    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == 29
    model = build_model(load_config(QUICKSTART))
    DetectionCheckpointer(model).load(str(out / "model_final.pth"))
    model.load_state_dict(final["model"])  # strict: every key of the model, no other
