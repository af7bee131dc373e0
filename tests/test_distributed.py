"""
Multi-process training on the CPU (GLOO): two workers with half a batch each optimize what one
process does with the whole batch, because the loss normalizers are all-reduced means; and
``train_net.py --num-gpus 2`` trains.
"""

import json
import math
import os
import subprocess
import sys
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import dsla.modeling.proposal_generator as proposal_generator
from dsla.label_assignment import level_points
from dsla.modeling import DSLAProposalGenerator

from conftest import REPO_ROOT, shapes_env, short_training_opts

WORLD_SIZE = 2
NUM_IMAGES = 4
NUM_CLASSES = 3
STRIDES = [8, 16]
IMAGE_SIZE = 64


def _generator():
    return DSLAProposalGenerator(
        two_stage=False,
        head=nn.Identity(),
        in_features=["p3", "p4"],
        strides=STRIDES,
        regress_ranges=[(0.0, 24.0), (24.0, math.inf)],
        num_classes=NUM_CLASSES,
        interval_relaxation=0.2,
        center_sampling_radius=1.5,
        box_loss_type="iou",
        cls_loss_weight=2.0,
    )


def _batch():
    """
    Deterministic head outputs and ground truth of 4 images. The halves differ in how many positives
    they have and in how well their boxes are predicted, so normalizing each worker by its own sums
    would weight their images differently.
    """
    g = torch.Generator().manual_seed(0)
    points = [level_points(IMAGE_SIZE // s, IMAGE_SIZE // s, s, 0.0) for s in STRIDES]
    logits = [torch.randn(NUM_IMAGES, len(p), NUM_CLASSES, generator=g) for p in points]
    distances = [torch.rand(NUM_IMAGES, len(p), 4, generator=g) * 30 + 2 for p in points]
    for x in distances:
        x[NUM_IMAGES // 2 :] *= 0.05
    boxes_per_image = [
        [[4, 4, 60, 56], [10, 20, 30, 40], [36, 8, 58, 30]],
        [[2, 30, 40, 62]],
        [[20, 18, 44, 42]],
        [[0, 0, 64, 64], [40, 40, 60, 62]],
    ]
    gt_instances = []
    for boxes in boxes_per_image:
        inst = Instances((IMAGE_SIZE, IMAGE_SIZE))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.arange(len(boxes)) % NUM_CLASSES
        gt_instances.append(inst)
    return points, logits, distances, gt_instances


def _losses_and_grads(images: slice):
    """
    The DSLA losses of some images of the batch, with logits and distances made functions of two
    scalar parameters so that the gradients that DDP would average can be compared too.
    """
    points, logits, distances, gt_instances = _batch()
    logit_scale = torch.tensor(1.0, requires_grad=True)
    distance_scale = torch.tensor(0.0, requires_grad=True)
    logits = [x[images] * logit_scale for x in logits]
    distances = [x[images] * distance_scale.exp() for x in distances]
    generator = _generator()
    with EventStorage():
        labels = generator.label_points(points, gt_instances[images])
        losses = generator.losses(logits, distances, *labels)
        static = labels[0]
    sum(losses.values()).backward()
    return {
        "losses": {k: v.detach() for k, v in losses.items()},
        "grads": torch.stack([logit_scale.grad, distance_scale.grad]),
        "sum_y_s": static.sum(),
    }


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        images = slice(rank * NUM_IMAGES // WORLD_SIZE, (rank + 1) * NUM_IMAGES // WORLD_SIZE)
        result = _losses_and_grads(images)
        dist.all_reduce(result["grads"])
        result["grads"] /= WORLD_SIZE  # what DDP does to the gradients
        # The same computation with each worker normalizing by its own sums.
        with mock.patch.object(proposal_generator, "all_reduce_mean", lambda x: x.detach()):
            result["local_losses"] = _losses_and_grads(images)["losses"]
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_workers_average_to_the_single_process_losses_and_gradients(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    workers = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    single = _losses_and_grads(slice(0, NUM_IMAGES))

    # Normalizers well above the clamp at 1, in every worker.
    assert all(w["sum_y_s"] > 2 for w in workers)
    for key, expected in single["losses"].items():
        averaged = sum(w["losses"][key] for w in workers) / WORLD_SIZE
        assert averaged.item() == pytest.approx(expected.item(), rel=1e-5), key
    torch.testing.assert_close(workers[0]["grads"], single["grads"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(workers[1]["grads"], workers[0]["grads"])

    # The check has teeth: with per-worker normalizers, the average differs from the single-process
    # loss.
    for key, expected in single["losses"].items():
        averaged_local = sum(w["local_losses"][key] for w in workers) / WORLD_SIZE
        assert abs(averaged_local.item() - expected.item()) > 0.05 * expected.item(), key


def test_train_net_with_two_processes_on_the_cpu(shapes_root, tmp_path):
    out = tmp_path / "out"
    # The GPU hidden: where one is visible, detectron2's launch() asks for --num-gpus GPUs and NCCL.
    env = {**shapes_env(shapes_root), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO_ROOT, "train_net.py"),
            "--num-gpus",
            str(WORLD_SIZE),
            "--dist-url",
            "auto",
            "--config-file",
            os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.yaml"),
            "MODEL.DEVICE",
            "cpu",
            *short_training_opts(out, 3, ims_per_batch=4, evaluate=True),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    with open(out / "log.txt") as f:
        assert "World size: 2" in f.read()
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    trained = [m for m in metrics if "loss_dsla_box" in m]
    assert trained and all(math.isfinite(m["total_loss"]) for m in trained)
    assert any("bbox/AP50" in m for m in metrics)  # the final evaluation ran on both workers
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 2
