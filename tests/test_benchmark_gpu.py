"""dsla.benchmark's parts for the GPU check (amp, step, the batched assignment), run on the CPU at
tiny sizes, and the helpers that read the profiler and the synchronization warnings."""

import os
import traceback
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from dsla import benchmark

SIZE = (128, 160)


def test_amp_part_times_both_detectors_in_each_precision():
    rows = benchmark.benchmark_amp("cpu", SIZE, [1], [1], ["fp32", "bf16"], reps=1)
    cases = [(r["mode"], r["batch"], r["amp"]) for r in rows]
    assert cases == [(m, 1, a) for a in ("fp32", "bf16") for m in ("train", "inference")]
    for row in rows:
        assert row["DSLA_s"] > 0 and row["FCOS_s"] > 0
        assert row["DSLA/FCOS_time"] == pytest.approx(row["DSLA_s"] / row["FCOS_s"])


def test_step_part_times_a_whole_step_and_splits_it_into_stages():
    (row,) = benchmark.profile_training_step("cpu", SIZE, 1, reps=1)
    assert row["batch"] == 1 and row["step_s"] > 0
    stages = benchmark.STEP_STAGES
    assert all(row[f"{s}_s"] > 0 for s in stages)
    assert row["staged_step_s"] == pytest.approx(sum(row[f"{s}_s"] for s in stages))
    assert sum(row[f"{s}_pct"] for s in stages) == pytest.approx(100.0)
    assert "syncs_loss_path" not in row  # counted on CUDA only


def test_assignment_of_several_images_reports_their_number():
    (row,) = benchmark.benchmark_assignment("cpu", SIZE, [10], reps=1, batch_size=3)
    assert row["batch"] == 3 and row["num_boxes"] == 10 and row["seconds"] > 0


def test_float32_losses_casts_half_precision_tensors_and_lists_of_them():
    def dtypes(x, xs, boxes=None, label=None):
        return x.dtype, [t.dtype for t in xs], boxes.dtype, label.dtype

    wrapped = benchmark.float32_losses(dtypes, "cpu")
    half, ints = torch.zeros(2, dtype=torch.half), torch.zeros(2, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x, xs, boxes, label = wrapped(half, [half, half.bfloat16()], boxes=half, label=ints)
    assert (x, xs, boxes, label) == (torch.float32, [torch.float32] * 2, torch.float32, torch.long)


def _event(device, start, end, name="kernel"):
    return SimpleNamespace(
        device_type=device, name=name, time_range=SimpleNamespace(start=start, end=end)
    )


def test_gpu_busy_time_is_the_union_of_the_device_intervals():
    events = [
        _event(DeviceType.CUDA, 0, 100),
        _event(DeviceType.CUDA, 50, 150),  # overlaps the first
        _event(DeviceType.CUDA, 60, 70),  # inside it
        _event(DeviceType.CUDA, 300, 400),
        _event(DeviceType.CPU, 0, 10_000, "aten::conv2d"),
    ]
    assert benchmark.gpu_busy_seconds(events) == pytest.approx(250e-6)


def test_host_sync_calls_are_the_blocking_runtime_calls():
    events = [
        _event(DeviceType.CPU, 0, 30, "cudaStreamSynchronize"),
        _event(DeviceType.CPU, 40, 45, "cudaMemcpyAsync"),
        _event(DeviceType.CPU, 50, 60, "cudaMemcpy"),
        _event(DeviceType.CPU, 70, 90, "aten::item"),
        _event(DeviceType.CUDA, 0, 100, "Memcpy DtoH (Device -> Pageable)"),
    ]
    count, seconds = benchmark.host_sync_calls(events)
    assert count == 2 and seconds == pytest.approx(40e-6)


def test_sync_sites_are_dsla_lines_and_the_loss_path_is_told_apart(tmp_path):
    package = str(tmp_path / "dsla")
    generator = os.path.join(package, "modeling", "proposal_generator.py")
    losses = os.path.join(package, "losses.py")
    head = os.path.join(package, "modeling", "head.py")

    def stack(*frames):
        return [traceback.FrameSummary(f, line, name) for f, line, name in frames]

    forward = ("bench.py", 1, "main"), (generator, 100, "forward")
    stacks = [
        stack(*forward, (generator, 20, "losses"), (losses, 10, "paired_iou")),
        stack(*forward, (generator, 20, "losses"), (losses, 10, "paired_iou")),
        # Made in torch, called from the loss path: the site is dsla's line.
        stack(*forward, (generator, 30, "label_points"), ("/site/torch/functional.py", 99, "f")),
        # The head, run from the generator's forward, is not the loss path.
        stack(*forward, (generator, 40, "predict"), (head, 5, "forward")),
        stack(("bench.py", 1, "main"), ("/site/detectron2/structures/instances.py", 7, "to")),
    ]
    loss_path, elsewhere = benchmark.sync_sites(stacks, package)
    assert loss_path == {"losses.py:10": 2, os.path.join("modeling", "proposal_generator.py:30"): 1}
    assert elsewhere == {
        os.path.join("modeling", "head.py:5"): 1,
        "/site/detectron2/structures/instances.py:7": 1,
    }
