#!/usr/bin/env python
"""
Speed and memory of DSLA against detectron2's FCOS on the same backbone, and of the DSLA label
assignment.

    python tools/benchmark.py                       # everything, on the CPU (and CUDA if present)
    python tools/benchmark.py --devices cuda --reps 10
    python tools/benchmark.py --quick               # seconds; for tests
    python tools/benchmark.py --parts export --reps 10 --output output/export_latency.json
    python tools/benchmark.py --parts speed --reps 5 --output output/speed.json

The parts below (and the GPU check's ``amp`` and ``step``, ``docs/gpu.md``), each printed as a table
and written to ``--output`` as JSON:

1. ``models``: training step (forward + backward) and inference of DSLA R-50-FPN and FCOS R-50-FPN
   (``configs/DSLA/dsla_R_50_FPN_1x.yaml``, ``configs/FCOS-Baseline/fcos_R_50_FPN_1x.yaml``, random
   weights) on the same inputs, alternating DSLA and FCOS runs; medians over ``--reps`` runs after
   one warm-up, and the peak memory each run adds.
2. ``assignment``: time and peak extra memory of the R-50 head's ``label_points`` on the points of
   one image against the number of ground-truth boxes, each measured in a fresh process.
3. ``profile``: where a DSLA training step spends its time: backbone, head, label assignment,
   losses, backward, and inference post-processing.
4. ``export`` (only when asked for): CPU latency of one ``--export-size`` image through the
   quick-start and the R-50 model (random weights), eager, traced to TorchScript, and exported to
   ONNX and run by onnxruntime with as many threads as torch; medians over ``--reps`` runs after two
   warm-ups (TorchScript optimizes the graph during its first runs). Each row also says whether the
   exported model's detections match the eager model's.
5. ``speed`` (only when asked for): the CPU speed options side by side, alternating within the
   process: the training step (through the trainer that training uses) of the quick start and the
   real-images model at their training size and batch, and R-50 inference at 800x1333, in fp32
   eager, bfloat16 autocast, channels_last and both (``--speed-compile`` adds torch.compile of the
   backbone and head to the training steps), and quick-start training iterations with the real
   loader and 0/1/2 workers; medians and minima over ``--reps`` runs after the warm-ups, and the
   speed-up over fp32 eager.

Peak memory is CUDA's ``max_memory_allocated`` on GPUs; on the CPU, the process's peak resident
memory (``VmHWM``, reset before each run through ``/proc/self/clear_refs``) minus its resident
memory before the run.
"""

import argparse
import functools
import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager

import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

import dsla
from dsla import get_dsla_cfg
from dsla.data import register_shapes_datasets
from dsla.engine import Trainer, cpu_has_bfloat16, trainer_class
from dsla.engine.amp import cpu_name
from dsla.export import (
    FORMATS,
    ExportedModel,
    compare_detections,
    eager_detections,
    export_model,
    measure_latency,
)
from dsla.modeling.proposal_generator import check_finite_predictions
from dsla.solver import build_optimizer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "DSLA": "configs/DSLA/dsla_R_50_FPN_1x.yaml",
    "FCOS": "configs/FCOS-Baseline/fcos_R_50_FPN_1x.yaml",
}
EXPORT_CONFIGS = {"quickstart": "configs/DSLA/dsla_quickstart_shapes.yaml", "R-50": CONFIGS["DSLA"]}
logger = logging.getLogger("dsla.benchmark")


# ----------------------------------------------------------------------------------------------
# measurement


def _proc_status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@contextmanager
def measure(device, result):
    """Wall time (seconds) and peak extra memory (MB) of the block, stored into ``result``."""
    _synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_status_kb("VmRSS") * 1024
    start = time.perf_counter()
    yield
    _synchronize(device)
    result["seconds"] = time.perf_counter() - start
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _proc_status_kb("VmHWM") * 1024
    result["peak_mb"] = max(peak - base, 0) / 2**20


def _median(runs, key):
    return statistics.median(r[key] for r in runs)


# -----------------------------------------------------------------------------------------------
# inputs


def _random_instances(height, width, num_boxes, num_classes, generator):
    xy = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([width * 0.8, height * 0.8])
    wh = (torch.rand(num_boxes, 2, generator=generator) * 0.5 + 0.02) * torch.tensor(
        [width, height]
    )
    boxes = torch.cat(
        [xy, torch.minimum(xy + wh, torch.tensor([width - 1.0, height - 1.0]))], dim=1
    )
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.randint(0, num_classes, (num_boxes,), generator=generator)
    return inst


def make_batch(height, width, batch_size, num_boxes=10, num_classes=80, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(3, height, width, generator=generator) * 255,
            "instances": _random_instances(height, width, num_boxes, num_classes, generator),
            "height": height,
            "width": width,
        }
        for _ in range(batch_size)
    ]


def build(name, device):
    cfg = get_dsla_cfg(
        os.path.join(REPO_ROOT, CONFIGS[name]), ["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""]
    )
    torch.manual_seed(0)
    return build_model(cfg)


# ------------------------------------------------------------------------------------------------
# parts


def train_step(model, batch):
    model.train()
    with EventStorage():
        losses = model(batch)
        sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def inference(model, batch):
    model.eval()
    model([{k: v for k, v in x.items() if k != "instances"} for x in batch])


def benchmark_models(device, sizes, batch_sizes, reps):
    models = {name: build(name, device) for name in CONFIGS}
    rows = []
    for height, width in sizes:
        for batch_size in batch_sizes:
            batch = make_batch(height, width, batch_size)
            for mode, fn in (("train", train_step), ("inference", inference)):
                runs = {name: [] for name in models}
                for rep in range(reps + 1):
                    for (
                        name,
                        model,
                    ) in models.items():  # alternate the models within each repetition
                        result = {}
                        with measure(device, result):
                            fn(model, batch)
                        if rep > 0:  # the first repetition warms up
                            runs[name].append(result)
                row = {
                    "device": device,
                    "size": f"{height}x{width}",
                    "batch": batch_size,
                    "mode": mode,
                }
                for name, r in runs.items():
                    row[f"{name}_s"] = _median(r, "seconds")
                    row[f"{name}_peak_mb"] = _median(r, "peak_mb")
                row["DSLA/FCOS_time"] = row["DSLA_s"] / row["FCOS_s"]
                rows.append(row)
                logger.info(json.dumps(row))
    return rows


def _assignment_worker(device, height, width, num_boxes, reps, queue, batch_size=1):
    # The assignment of the R-50 model's own head: its levels, strides, ranges and point offset.
    generator = build("DSLA", device).proposal_generator
    points = generator.make_points(
        [(math.ceil(height / s), math.ceil(width / s)) for s in generator.strides], device
    )
    rng = torch.Generator().manual_seed(num_boxes)
    gt = [
        _random_instances(height, width, num_boxes, 80, rng).to(device) for _ in range(batch_size)
    ]
    runs = []
    for _ in range(reps + 1):
        result = {}
        with measure(device, result):
            generator.label_points(points, gt)
        runs.append(result)
    # Time: median after the warm-up run. Memory: the largest, which is the first run's in a fresh
    # process.
    queue.put(
        {
            "seconds": _median(runs[1:], "seconds"),
            "peak_mb": max(r["peak_mb"] for r in runs),
            "num_points": sum(len(p) for p in points),
        }
    )


def benchmark_assignment(device, size, box_counts, reps, batch_size=1):
    """Each box count in a fresh process, so that memory freed by an earlier run does not hide this
    one's; ``batch_size`` images of ``num_boxes`` boxes each, labelled together as in a training
    step."""
    ctx = mp.get_context("spawn")
    rows = []
    for num_boxes in box_counts:
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_assignment_worker, args=(device, *size, num_boxes, reps, queue, batch_size)
        )
        proc.start()
        result = queue.get()
        proc.join()
        row = {
            "device": device,
            "size": f"{size[0]}x{size[1]}",
            "num_points": result["num_points"],
            "num_boxes": num_boxes,
            "batch": batch_size,
            "seconds": result["seconds"],
            "peak_mb": result["peak_mb"],
        }
        rows.append(row)
        logger.info(json.dumps(row))
    return rows


def profile_dsla_step(device, size, batch_size, reps):
    """Median time of each stage of a DSLA training step, and of inference post-processing."""
    model = build("DSLA", device)
    model.train()
    batch = make_batch(*size, batch_size)
    generator = model.proposal_generator
    stages = ("backbone", "head", "assignment", "losses", "backward", "post-processing")
    times = {s: [] for s in stages}
    for rep in range(reps + 1):
        t = {}
        with EventStorage():
            with measure(device, t.setdefault("backbone", {})):
                images = model.preprocess_image(batch)
                features = model.backbone(images.tensor)
                feats = [features[f] for f in generator.in_features]
            with measure(device, t.setdefault("head", {})):
                points, logits, distances = generator.predict(feats)
            gt = [x["instances"].to(device) for x in batch]
            with measure(device, t.setdefault("assignment", {})):
                labels = generator.label_points(points, gt)
            with measure(device, t.setdefault("losses", {})):
                losses = generator.losses(logits, distances, *labels)
            with measure(device, t.setdefault("backward", {})):
                sum(losses.values()).backward()
            with measure(device, t.setdefault("post-processing", {})), torch.no_grad():
                generator.inference(
                    points,
                    [x.detach() for x in logits],
                    [x.detach() for x in distances],
                    images.image_sizes,
                )
        model.zero_grad(set_to_none=True)
        if rep > 0:
            for s in stages:
                times[s].append(t[s]["seconds"])
    med = {s: statistics.median(v) for s, v in times.items()}
    total = sum(med[s] for s in stages if s != "post-processing")
    row = {
        "device": device,
        "size": f"{size[0]}x{size[1]}",
        "batch": batch_size,
        "train_step_s": total,
    }
    row.update({f"{s}_s": med[s] for s in stages})
    row.update({f"{s}_pct": 100 * med[s] / total for s in stages if s != "post-processing"})
    logger.info(json.dumps(row))
    return [row]


def benchmark_export(names, size, reps, output_dir, score_thresh=None):
    """Eager vs TorchScript vs onnxruntime latency of one image on the CPU, for the
    ``EXPORT_CONFIGS`` named."""
    height, width = size
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    threads = torch.get_num_threads()
    rows = []
    for name in names:
        opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
        if score_thresh is not None:
            opts += ["MODEL.DSLA.SCORE_THRESH_TEST", str(score_thresh)]
        cfg = get_dsla_cfg(os.path.join(REPO_ROOT, EXPORT_CONFIGS[name]), opts)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        expected = eager_detections(model, image)
        row = {
            "model": name,
            "size": f"{height}x{width}",
            "threads": threads,
            "score_thresh": cfg.MODEL.DSLA.SCORE_THRESH_TEST,
            "detections": len(expected["scores"]),
            "eager_s": measure_latency(lambda m=model: eager_detections(m, image), reps, warmup=2),
        }
        for fmt in sorted(FORMATS):
            exported = ExportedModel(
                export_model(model, image, fmt, os.path.join(output_dir, name)), threads
            )
            row[f"{fmt}_s"] = measure_latency(lambda e=exported: e(image), reps, warmup=2)
            row[f"{fmt}_matches_eager"] = compare_detections(expected, exported(image)) is None
        rows.append(row)
        logger.info(json.dumps(row))
    return rows


# ---------------------------------------------------------------------------------------------
# the GPU check's parts (tools/gpu_check.sh, docs/gpu.md); they run on any device


AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
STEP_STAGES = ("data", "backbone", "head", "assignment", "losses", "backward", "optimizer")
# The loss path: the functions of this file of the dsla package through which a training step
# labels the points and computes the losses; synchronizations made within them are counted apart.
LOSS_PATH_FILE = os.path.join("modeling", "proposal_generator.py")
LOSS_PATH_FUNCTIONS = ("check_finite_predictions", "label_points", "losses")
# CUDA runtime calls that block the host until the GPU is done with the work queued before them.
SYNC_CALLS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
)


def autocast(device, amp):
    """Autocast to the dtype named ``amp`` (a key of ``AMP_DTYPES``); "fp32" autocasts nothing."""
    dtype = AMP_DTYPES[amp]
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def amp_train_step(model, batch, device, amp):
    """:func:`train_step` with the forward under :func:`autocast` (the backward outside it, as
    detectron2's AMPTrainer does; no loss scaling, which costs both detectors the same)."""
    model.train()
    with EventStorage():
        with autocast(device, amp):
            losses = model(batch)
        sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)


def amp_inference(model, batch, device, amp):
    with autocast(device, amp):
        inference(model, batch)


def float32_losses(fn, device):
    """
    ``fn`` with its floating-point tensor arguments (also in lists and tuples) in float32 and
    autocast off: detectron2's FCOS losses fail on half-precision predictions (fvcore's
    ``giou_loss`` writes float32 values into a half-precision tensor), and DSLA's losses run in
    float32 too.
    """

    def cast(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.float()
        if isinstance(x, (list, tuple)):
            return type(x)(cast(v) for v in x)
        return x

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.autocast(torch.device(device).type, enabled=False):
            return fn(*cast(args), **{k: cast(v) for k, v in kwargs.items()})

    return wrapped


def benchmark_amp(device, size, train_batch_sizes, inference_batch_sizes, amps, reps):
    """
    DSLA against FCOS at one input size, in float32 and under autocast: a training step at each of
    ``train_batch_sizes`` and inference at each of ``inference_batch_sizes``, for each of ``amps``
    (keys of ``AMP_DTYPES``); models alternating within each repetition, medians of ``reps`` runs
    after one warm-up, as :func:`benchmark_models`. FCOS's losses run in float32
    (:func:`float32_losses`).
    """
    models = {name: build(name, device) for name in CONFIGS}
    models["FCOS"].losses = float32_losses(models["FCOS"].losses, device)
    cases = [("train", amp_train_step, b) for b in train_batch_sizes]
    cases += [("inference", amp_inference, b) for b in inference_batch_sizes]
    rows = []
    for amp in amps:
        for mode, fn, batch_size in cases:
            batch = make_batch(*size, batch_size)
            runs = {name: [] for name in models}
            for rep in range(reps + 1):
                for name, model in models.items():
                    result = {}
                    with measure(device, result):
                        fn(model, batch, device, amp)
                    if rep > 0:
                        runs[name].append(result)
            row = {
                "device": device,
                "size": f"{size[0]}x{size[1]}",
                "batch": batch_size,
                "mode": mode,
                "amp": amp,
            }
            for name, r in runs.items():
                row[f"{name}_s"] = _median(r, "seconds")
                row[f"{name}_peak_mb"] = _median(r, "peak_mb")
            row["DSLA/FCOS_time"] = row["DSLA_s"] / row["FCOS_s"]
            rows.append(row)
            logger.info(json.dumps(row))
    return rows


def gpu_busy_seconds(events):
    """
    Seconds during which the GPU ran anything (kernels, copies, fills): the union of the intervals
    of the profiler's device events.

    Args:
        events: profiler events with ``device_type`` and ``time_range`` (microseconds), as
            ``torch.profiler.profile().events()`` gives them.
    """
    intervals = sorted(
        (e.time_range.start, e.time_range.end)
        for e in events
        if e.device_type == torch.autograd.DeviceType.CUDA
    )
    busy, end = 0.0, -math.inf
    for start, stop in intervals:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy / 1e6


def host_sync_calls(events):
    """
    The CUDA runtime calls among the profiler's ``events`` that block the host (``SYNC_CALLS``;
    ``cudaMemcpyAsync`` is not one of them, the ``cudaStreamSynchronize`` that follows a copy to
    the host is).

    Returns:
        (number of calls, seconds the host spent in them)
    """
    calls = [
        e
        for e in events
        if e.device_type == torch.autograd.DeviceType.CPU
        and any(e.name == c or e.name.startswith(c + "_") for c in SYNC_CALLS)
    ]
    return len(calls), sum(e.time_range.end - e.time_range.start for e in calls) / 1e6


@contextmanager
def recording_syncs():
    """
    Turns on CUDA's sync debug mode (``torch.cuda.set_sync_debug_mode("warn")``) within the block
    and yields a list that collects, for each synchronizing operation, the Python stack that made
    it (``traceback.extract_stack()``, outermost frame first).
    """
    stacks = []

    def showwarning(message, *args, **kwargs):
        if "synchroniz" in str(message):
            stack = traceback.extract_stack()[:-1]
            stacks.append([f for f in stack if f.filename != warnings.__file__])

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = showwarning
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield stacks
        finally:
            torch.cuda.set_sync_debug_mode("default")


def sync_sites(stacks, package_dir):
    """
    Where synchronizing operations were made, by call site.

    Args:
        stacks: the Python stack of each synchronization (lists of ``traceback.FrameSummary``,
            outermost first), as :func:`recording_syncs` collects them.
        package_dir: the directory of the ``dsla`` package. A synchronization is in the loss path
            if its stack passes through one of the ``LOSS_PATH_FUNCTIONS`` of ``LOSS_PATH_FILE``.

    Returns:
        (loss_path, elsewhere): each {"file:line": number of synchronizations}, the site being the
        innermost frame in dsla's code if there is one, else the innermost frame; ``file``
        relative to ``package_dir`` for dsla's files.
    """
    loss_path_file = os.path.join(package_dir, LOSS_PATH_FILE)
    loss_path, elsewhere = {}, {}
    for stack in stacks:
        files = [os.path.abspath(frame.filename) for frame in stack]
        ours = [i for i, f in enumerate(files) if f.startswith(package_dir + os.sep)]
        i = ours[-1] if ours else len(stack) - 1
        filename = os.path.relpath(files[i], package_dir) if ours else files[i]
        in_loss_path = any(
            f == loss_path_file and frame.name in LOSS_PATH_FUNCTIONS
            for f, frame in zip(files, stack)
        )
        sites = loss_path if in_loss_path else elsewhere
        site = f"{filename}:{stack[i].lineno}"
        sites[site] = sites.get(site, 0) + 1
    return loss_path, elsewhere


def _staged_step(model, batch, optimizer, device, stage):
    """One DSLA training step split into ``STEP_STAGES``, each inside ``stage(name)``, the way
    ``DSLADetector.forward`` and ``DSLAProposalGenerator.forward`` run it."""
    generator = model.proposal_generator
    with EventStorage():
        with stage("data"):
            images = model.preprocess_image(batch)
            gt = [x["instances"].to(device) for x in batch]
        with stage("backbone"):
            features = model.backbone(images.tensor)
        with stage("head"):
            points, logits, distances = generator.predict(
                [features[f] for f in generator.in_features]
            )
        with stage("assignment"):
            labels = generator.label_points(points, gt)
        with stage("losses"):
            check_finite_predictions(logits, distances)
            losses = generator.losses(logits, distances, *labels)
        with stage("backward"):
            sum(losses.values()).backward()
        with stage("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def _whole_step(model, batch, optimizer):
    with EventStorage():
        losses = model(batch)
        sum(losses.values()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def profile_training_step(device, size, batch_size, reps):
    """
    A DSLA R-50 training step of ``batch_size`` images with an SGD update: its time whole
    (``step_s``), where it goes (``STEP_STAGES``, each stage synchronized), and on CUDA its
    host-device synchronizations.

    ``data`` is the batch to the device and detectron2's normalization and padding (the images are
    uint8, as detectron2's ``DatasetMapper`` gives them; decoding and augmentation, done by the data
    loader's workers, are not in it). The synchronizations are those that
    ``torch.cuda.set_sync_debug_mode("warn")`` reports in one whole step, by call site, the loss
    path's apart (:func:`sync_sites`); the profiler's blocking runtime calls in the loss path
    (``assignment`` and ``losses``); and ``sync_cost_pct``, an upper bound on what they cost: the
    time the GPU stood idle in the loss path (its wall time less the GPU's busy time there), in
    percent of the step. Without the synchronizations that idle time would overlap the forward's
    GPU work.
    """
    model = build("DSLA", device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
    batch = make_batch(*size, batch_size)
    for x in batch:
        x["image"] = x["image"].to(torch.uint8)

    whole, stages = [], {s: [] for s in STEP_STAGES}
    for rep in range(reps + 1):
        result, t = {}, {}
        with measure(device, result):
            _whole_step(model, batch, optimizer)
        _staged_step(
            model, batch, optimizer, device, lambda s, t=t: measure(device, t.setdefault(s, {}))
        )
        if rep > 0:
            whole.append(result)
            for s in STEP_STAGES:
                stages[s].append(t[s])
    row = {
        "device": device,
        "size": f"{size[0]}x{size[1]}",
        "batch": batch_size,
        "step_s": _median(whole, "seconds"),
        "step_peak_mb": _median(whole, "peak_mb"),
    }
    row.update({f"{s}_s": _median(stages[s], "seconds") for s in STEP_STAGES})
    staged = sum(row[f"{s}_s"] for s in STEP_STAGES)
    row["staged_step_s"] = staged
    row.update({f"{s}_pct": 100 * row[f"{s}_s"] / staged for s in STEP_STAGES})
    if device.startswith("cuda"):
        row.update(_loss_path_syncs(model, batch, optimizer, device, row))
    logger.info(json.dumps(row))
    return [row]


def _loss_path_syncs(model, batch, optimizer, device, row):
    """The synchronization figures of :func:`profile_training_step`, on CUDA."""
    torch.cuda.synchronize(device)
    with recording_syncs() as stacks:
        _whole_step(model, batch, optimizer)
    loss_path, elsewhere = sync_sites(stacks, os.path.dirname(os.path.abspath(dsla.__file__)))
    out = {
        "syncs_loss_path": sum(loss_path.values()),
        "syncs_elsewhere": sum(elsewhere.values()),
        "sync_sites_loss_path": loss_path,
        "sync_sites_elsewhere": elsewhere,
    }

    loss_path_stages = ("assignment", "losses")
    profiles = []

    @contextmanager
    def profiled(name):
        if name not in loss_path_stages:
            yield
            return
        torch.cuda.synchronize(device)
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        ) as prof:
            yield
            torch.cuda.synchronize(device)
        profiles.append(prof.events())

    try:
        _staged_step(model, batch, optimizer, device, profiled)
    except Exception as e:  # the CUDA profiler needs CUPTI; the rest of the row stands without it
        out["profiler_error"] = str(e)
        return out
    calls = [host_sync_calls(events) for events in profiles]
    busy = sum(gpu_busy_seconds(events) for events in profiles)
    wall = sum(row[f"{s}_s"] for s in loss_path_stages)
    out.update(
        {
            "loss_path_s": wall,
            "loss_path_gpu_busy_s": busy,
            "loss_path_sync_calls": sum(n for n, _ in calls),
            "loss_path_sync_wait_s": sum(s for _, s in calls),
            "sync_cost_pct": 100 * max(wall - busy, 0.0) / row["step_s"],
        }
    )
    return out


# ---------------------------------------------------------------------------------------------
# CPU speed options (--parts speed)

# The training steps measured by default (name -> YAML; random weights, random inputs at the
# config's training size and batch); any other YAML can be named with --speed-configs.
SPEED_TRAIN_CONFIGS = {
    "quickstart": "configs/DSLA/dsla_quickstart_shapes.yaml",
    "trees": "configs/DSLA/dsla_mobilenet_v2_trees.yaml",
}
SPEED_INFERENCE_CONFIG = CONFIGS["DSLA"]
# (variant, bfloat16 autocast, channels_last)
SPEED_VARIANTS = [
    ("fp32", False, False),
    ("bf16", True, False),
    ("channels_last", False, True),
    ("channels_last+bf16", True, True),
]
# Iterations per loader block; the first is not timed (it takes what the workers prefetched while
# the other blocks ran).
SPEED_LOADER_STEPS = 5
SPEED_COLUMNS = {
    "train": (
        "config size batch variant median_s min_s speedup speedup_min first_s first_loss"
    ).split(),
    "inference": "config size variant median_s min_s speedup speedup_min detections".split(),
    "loader": "config variant workers threads iter_s min_iter_s data_s speedup".split(),
}


def _speed_cfg(config_file, opts=()):
    path = config_file if os.path.isabs(config_file) else os.path.join(REPO_ROOT, config_file)
    return get_dsla_cfg(path, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])


def _speed_model(cfg, channels_last=False, compiled=False):
    """The model of ``cfg`` with the weights of seed 0, in the memory format and compilation
    asked."""
    torch.manual_seed(0)
    model = build_model(cfg)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compiled:
        # Only the tensor-to-tensor parts: the meta-architecture's ImageList and Instances, the
        # label assignment and the post-processing stay eager.
        model.backbone = torch.compile(model.backbone)
        model.proposal_generator.head = torch.compile(model.proposal_generator.head)
    return model


def _train_input_size(cfg):
    """(H, W) of a training input: the short side MIN_SIZE_TRAIN (largest), 4:3 up to
    MAX_SIZE_TRAIN."""
    short = max(cfg.INPUT.MIN_SIZE_TRAIN)
    return short, min(cfg.INPUT.MAX_SIZE_TRAIN, round(short * 4 / 3))


def _speed_trainer(model, cfg, data, bf16):
    """The trainer that training uses (:func:`dsla.engine.trainer_class`), on ``data``."""
    return trainer_class(bf16, "cpu")(model, data, build_optimizer(cfg, model))


def _run_step(trainer):
    with EventStorage(trainer.iter) as storage:
        trainer.run_step()
    trainer.iter += 1
    return storage


def _timed_alternating(fns, reps, warmup):
    """
    Wall times of each of ``fns`` (name -> fn()), alternating the names within each repetition so
    that a slower or busier phase of the machine hits them alike.

    Returns:
        name -> {"runs": [seconds of each timed run], "first_s": the first run}
    """
    out = {name: {"runs": []} for name in fns}
    for rep in range(warmup + reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds = time.perf_counter() - start
            if rep == 0:
                out[name]["first_s"] = seconds
            if rep >= warmup:
                out[name]["runs"].append(seconds)
    return out


def _speed_rows(times, base, **fields):
    """Rows with the median and min of each variant's runs and the speed-up over ``base``."""
    rows = []
    for name, t in times.items():
        row = {**fields, "variant": name}
        row["median_s"] = statistics.median(t["runs"])
        row["min_s"] = min(t["runs"])
        row["speedup"] = statistics.median(times[base]["runs"]) / row["median_s"]
        row["speedup_min"] = min(times[base]["runs"]) / row["min_s"]
        row["first_s"] = t["first_s"]
        rows.append(row)
        logger.info(json.dumps(row))
    return rows


def speed_train_step(name, config_file, variants, reps, size=None, batch_size=None):
    """
    One training step (forward, backward, optimizer step, through the trainer that training uses)
    of ``config_file`` on a fixed random batch at its training size and batch, for each variant
    ``(name, bf16, channels_last, compiled)``, alternating. Every variant starts from the same
    weights; its first step's losses are in ``first_loss``.
    """
    cfg = _speed_cfg(config_file)
    height, width = size or _train_input_size(cfg)
    batch_size = batch_size or cfg.SOLVER.IMS_PER_BATCH
    batch = make_batch(height, width, batch_size, num_classes=cfg.MODEL.DSLA.NUM_CLASSES)
    trainers, first_loss = {}, {}
    for variant, bf16, channels_last, compiled in variants:
        model = _speed_model(cfg, channels_last, compiled)
        trainers[variant] = _speed_trainer(model, cfg, itertools.repeat(batch), bf16)

    def step(variant):
        storage = _run_step(trainers[variant])
        first_loss.setdefault(variant, storage.history("total_loss").latest())

    times = _timed_alternating(
        {v: functools.partial(step, v) for v in trainers}, reps, warmup=2 if reps > 1 else 1
    )
    rows = _speed_rows(
        times, "fp32", part="train", config=name, size=f"{height}x{width}", batch=batch_size
    )
    for row in rows:
        row["first_loss"] = first_loss[row["variant"]]
    return rows


def speed_inference(config_file, size, variants, reps):
    """Inference of one ``size`` image through ``config_file`` (random weights), per variant
    ``(name, bf16, channels_last)``, alternating; detections per image in ``detections``."""
    cfg = _speed_cfg(config_file)
    height, width = size
    inputs = [{"image": make_batch(height, width, 1)[0]["image"], "height": height, "width": width}]
    models, detections = {}, {}
    for variant, bf16, channels_last in variants:
        models[variant] = (_speed_model(cfg, channels_last).eval(), bf16)

    @torch.no_grad()
    def infer(variant):
        model, bf16 = models[variant]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            detections[variant] = len(model(inputs)[0]["instances"])

    times = _timed_alternating({v: functools.partial(infer, v) for v in models}, reps, warmup=1)
    rows = _speed_rows(
        times,
        "fp32",
        part="inference",
        config=os.path.basename(config_file),
        size=f"{height}x{width}",
        batch=1,
    )
    for row in rows:
        row["detections"] = detections[row["variant"]]
    return rows


def speed_loader(config_file, workers, threads, precisions, reps, num_images, steps, opts=()):
    """
    Training iterations of ``config_file`` (the quick start) with its train loader on a shapes
    dataset of ``num_images`` images in a temporary directory: for each precision, number of loader
    workers and number of torch threads, blocks of ``steps`` iterations, alternating; the first
    iteration of a block is not timed (it takes what the workers prefetched while the other blocks
    ran). ``iter_s`` is the median time of an iteration (data and step), ``data_s`` the median time
    it waited for its batch (detectron2's ``data_time``); ``speedup`` is over fp32 with the
    config's workers and torch's threads.
    """
    default_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        register_shapes_datasets(root=root, num_train=num_images, num_val=1)
        try:
            cfg = _speed_cfg(config_file, opts)
            base = ("fp32", cfg.DATALOADER.NUM_WORKERS, default_threads)
            trainers = {}
            for precision in precisions:
                model = _speed_model(cfg)
                for num_workers in workers:
                    cfg_w = _speed_cfg(
                        config_file, [*opts, "DATALOADER.NUM_WORKERS", str(num_workers)]
                    )
                    loader = Trainer.build_train_loader(cfg_w)
                    trainer = _speed_trainer(model, cfg, loader, precision == "bf16")
                    for num_threads in threads:
                        trainers[(precision, num_workers, num_threads)] = trainer
            data_times = {key: [] for key in trainers}

            def block(key):
                torch.set_num_threads(key[2])
                for i in range(steps):
                    storage = _run_step(trainers[key])
                    if i > 0:
                        data_times[key].append(storage.history("data_time").latest())

            # One block is one "run": its time per timed iteration is what is compared.
            times = _timed_alternating(
                {key: functools.partial(block, key) for key in trainers}, reps, warmup=1
            )
            for key, t in times.items():
                precision, num_workers, num_threads = key
                iter_s = [s / steps for s in t["runs"]]
                row = {
                    "part": "loader",
                    "config": os.path.basename(config_file),
                    "variant": precision,
                    "workers": num_workers,
                    "threads": num_threads,
                    "iter_s": statistics.median(iter_s),
                    "min_iter_s": min(iter_s),
                    "data_s": statistics.median(data_times[key]),
                }
                rows.append(row)
            keys = [(r["variant"], r["workers"], r["threads"]) for r in rows]
            base_s = rows[keys.index(base)]["iter_s"] if base in keys else rows[0]["iter_s"]
            for row in rows:
                row["speedup"] = base_s / row["iter_s"]
                logger.info(json.dumps(row))
            # Ends the loaders' worker processes before their dataset is deleted.
            trainers.clear()
        finally:
            torch.set_num_threads(default_threads)
            register_shapes_datasets()
    return rows


def benchmark_speed(args):
    """
    The CPU speed options side by side in this process (``--parts speed``): the training step of
    each of ``--speed-configs`` and R-50 inference at ``--speed-inference-size``, fp32 eager
    against bfloat16 autocast, channels_last and both (and torch.compile with
    ``--speed-compile``), and the quick start's training iterations with 0/1/2 loader workers.
    bfloat16 is left out on a CPU without bfloat16 instructions.
    """
    bf16 = cpu_has_bfloat16()
    if not bf16:
        logger.warning("This CPU has no bfloat16 instructions: measuring float32 variants only.")
    variants = [v for v in SPEED_VARIANTS if bf16 or not v[1]]
    train_variants = [(*v, False) for v in variants]
    if args.speed_compile:
        train_variants.append(("compile", False, False, True))
        if bf16:
            train_variants.append(("compile+bf16", True, False, True))
    quick = args.quick
    report = {
        "cpu": cpu_name(),
        "bf16_instructions": bf16,
        "threads": torch.get_num_threads(),
        "rows": [],
    }
    for name in args.speed_configs if "train" in args.speed_parts else ():
        config_file = SPEED_TRAIN_CONFIGS.get(name, name)
        report["rows"] += speed_train_step(
            name,
            config_file,
            train_variants,
            args.reps,
            size=(128, 128) if quick else None,
            batch_size=2 if quick else None,
        )
    if "inference" in args.speed_parts:
        size = (128, 160) if quick else _hw(args.speed_inference_size)
        report["rows"] += speed_inference(SPEED_INFERENCE_CONFIG, size, variants, args.reps)
    if "loader" not in args.speed_parts:
        return report
    report["rows"] += speed_loader(
        SPEED_TRAIN_CONFIGS["quickstart"],
        args.speed_workers,
        args.speed_threads or [torch.get_num_threads()],
        ["fp32", "bf16"] if bf16 else ["fp32"],
        args.reps,
        num_images=4 if quick else 64,
        steps=2 if quick else SPEED_LOADER_STEPS,
        opts=["SOLVER.IMS_PER_BATCH", "2"] if quick else (),
    )
    return report


def add_speed_arguments(parser):
    group = parser.add_argument_group("--parts speed (CPU speed options)")
    group.add_argument(
        "--speed-parts",
        nargs="+",
        default=["train", "inference", "loader"],
        choices=["train", "inference", "loader"],
    )
    group.add_argument(
        "--speed-configs",
        nargs="+",
        default=list(SPEED_TRAIN_CONFIGS),
        help=f"training steps to time: names ({', '.join(SPEED_TRAIN_CONFIGS)}) or YAML files",
    )
    group.add_argument("--speed-inference-size", default="800x1333", help="HxW of R-50 inference")
    group.add_argument("--speed-workers", nargs="+", type=int, default=[0, 1, 2])
    group.add_argument(
        "--speed-threads", nargs="+", type=int, default=None, help="default: torch's thread count"
    )
    group.add_argument(
        "--speed-compile",
        action="store_true",
        help="also torch.compile (backbone and head) in the training steps: minutes of compilation",
    )


# ---------------------------------------------------------------------------------------------
# reporting


def format_table(rows, columns):
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def _print_gpu_check_tables(report):
    if report["amp"]:
        columns = ["device", "size", "batch", "mode", "amp", "DSLA_s", "FCOS_s", "DSLA/FCOS_time"]
        print(format_table(report["amp"], columns + ["DSLA_peak_mb", "FCOS_peak_mb"]))
    if report["step"]:
        columns = ["device", "size", "batch", "step_s", *[f"{s}_pct" for s in STEP_STAGES]]
        print(format_table(report["step"], columns + ["syncs_loss_path", "sync_cost_pct"]))


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, and cuda if available"
    )
    parser.add_argument(
        "--sizes", nargs="+", default=["512x640", "800x1333"], help="HxW of the model inputs"
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--reps", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--box-counts", nargs="+", type=int, default=[10, 100, 1000, 3000])
    parser.add_argument("--assignment-size", default="800x1333")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["models", "assignment", "profile"],
        choices=["models", "assignment", "profile", "export", "amp", "step", "speed"],
    )
    parser.add_argument(
        "--export-size", default="800x1333", help="HxW of the input in the export part"
    )
    parser.add_argument(
        "--export-models", nargs="+", default=list(EXPORT_CONFIGS), choices=list(EXPORT_CONFIGS)
    )
    parser.add_argument(
        "--export-score-thresh",
        type=float,
        default=None,
        help="MODEL.DSLA.SCORE_THRESH_TEST in the export part (default: the configs' value)",
    )
    # The GPU check's parts and arguments (tools/gpu_check.sh).
    parser.add_argument(
        "--amp-dtypes",
        nargs="+",
        default=list(AMP_DTYPES),
        choices=list(AMP_DTYPES),
        help="amp part: float32 (fp32) and the autocast dtypes to time",
    )
    parser.add_argument(
        "--inference-batch-sizes",
        nargs="+",
        type=int,
        default=None,
        help="amp part: inference batch sizes (default: --batch-sizes)",
    )
    parser.add_argument("--step-batch", type=int, default=16, help="step part: images per step")
    parser.add_argument(
        "--assignment-batch", type=int, default=1, help="assignment part: images labelled together"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one repetition (for tests)"
    )
    parser.add_argument(
        "--output", default="output/benchmark.json", help="JSON file for the results"
    )
    add_speed_arguments(parser)
    return parser


def print_speed(speed):
    print(f"CPU speed options on {speed['cpu']}, {speed['threads']} threads")
    for part, columns in SPEED_COLUMNS.items():
        rows = [r for r in speed["rows"] if r["part"] == part]
        if rows:
            print(format_table(rows, columns))


def _hw(text):
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dsla")
    if args.quick:
        args.sizes, args.batch_sizes, args.reps = ["128x160"], [1], 1
        args.box_counts, args.assignment_size, args.export_size = [10, 100], "128x160", "128x160"
        args.step_batch = min(args.step_batch, 2)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [_hw(s) for s in args.sizes]
    report = {
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "models": [],
        "assignment": [],
        "profile": [],
        "export": [],
        "amp": [],
        "step": [],
    }
    for device in devices:
        if "models" in args.parts:
            report["models"] += benchmark_models(device, sizes, args.batch_sizes, args.reps)
        if "assignment" in args.parts:
            report["assignment"] += benchmark_assignment(
                device, _hw(args.assignment_size), args.box_counts, args.reps, args.assignment_batch
            )
        if "profile" in args.parts:
            report["profile"] += profile_dsla_step(
                device, sizes[-1], args.batch_sizes[0], args.reps
            )
        if "amp" in args.parts:
            report["amp"] += benchmark_amp(
                device,
                sizes[-1],
                args.batch_sizes,
                args.inference_batch_sizes or args.batch_sizes,
                args.amp_dtypes,
                args.reps,
            )
        if "step" in args.parts:
            report["step"] += profile_training_step(device, sizes[-1], args.step_batch, args.reps)
    if "export" in args.parts:
        export_dir = os.path.join(os.path.dirname(os.path.abspath(args.output)), "export_benchmark")
        report["export"] = benchmark_export(
            args.export_models,
            _hw(args.export_size),
            args.reps,
            export_dir,
            args.export_score_thresh,
        )
    if "speed" in args.parts:
        report["speed"] = benchmark_speed(args)

    if report["models"]:
        print(
            format_table(
                report["models"],
                [
                    "device",
                    "size",
                    "batch",
                    "mode",
                    "DSLA_s",
                    "FCOS_s",
                    "DSLA/FCOS_time",
                    "DSLA_peak_mb",
                    "FCOS_peak_mb",
                ],
            )
        )
    if report["assignment"]:
        print(
            format_table(
                report["assignment"],
                ["device", "size", "num_points", "num_boxes", "seconds", "peak_mb"],
            )
        )
    if report["profile"]:
        stages = ["backbone", "head", "assignment", "losses", "backward"]
        print(
            format_table(
                report["profile"],
                [
                    "device",
                    "size",
                    "batch",
                    "train_step_s",
                    *[f"{s}_pct" for s in stages],
                    "post-processing_s",
                ],
            )
        )
    if report["export"]:
        print(
            format_table(
                report["export"],
                [
                    "model",
                    "size",
                    "threads",
                    "detections",
                    "eager_s",
                    "torchscript_s",
                    "onnx_s",
                    "torchscript_matches_eager",
                    "onnx_matches_eager",
                ],
            )
        )
    _print_gpu_check_tables(report)
    if "speed" in report:
        print_speed(report["speed"])
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    logger.info(f"Wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
