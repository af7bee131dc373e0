"""
The GPU check's parts (``tools/gpu_check.sh``, ``docs/gpu.md``); they run on any device:

- ``amp``: DSLA against FCOS in float32 and under fp16 and bf16 autocast (:func:`benchmark_amp`);
- ``step``: a DSLA training step with its SGD update, whole and stage by stage, and on CUDA its
  host-device synchronizations (:func:`profile_training_step`).
"""

import functools
import json
import logging
import math
import os
import traceback
import warnings
from contextlib import contextmanager
from typing import Dict, List, Sequence, Tuple

import torch

from detectron2.utils.events import EventStorage

from ..modeling.proposal_generator import check_finite_predictions
from .detectors import compare_detectors, inference
from .inputs import CONFIGS, build, make_batch
from .measure import alternate, measure, measure_call, median

__all__ = [
    "AMP_DTYPES",
    "STEP_STAGES",
    "amp_inference",
    "amp_train_step",
    "autocast",
    "benchmark_amp",
    "float32_losses",
    "gpu_busy_seconds",
    "host_sync_calls",
    "profile_training_step",
    "recording_syncs",
    "sync_sites",
]

logger = logging.getLogger(__name__)

AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
STEP_STAGES = ("data", "backbone", "head", "assignment", "losses", "backward", "optimizer")
# The loss path: the functions of this file of the dsla package through which a training step
# labels the points and computes the losses; synchronizations made within them are counted apart.
LOSS_PATH_FILE = os.path.join("modeling", "proposal_generator.py")
LOSS_PATH_FUNCTIONS = ("check_finite_predictions", "label_points", "losses")
# The directory of the ``dsla`` package, against which synchronization sites are named.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def benchmark_amp(
    device: str,
    size: Tuple[int, int],
    train_batch_sizes: Sequence[int],
    inference_batch_sizes: Sequence[int],
    amps: Sequence[str],
    reps: int,
) -> List[Dict]:
    """
    DSLA against FCOS at one input size, in float32 and under autocast: a training step at each of
    ``train_batch_sizes`` and inference at each of ``inference_batch_sizes``, for each of ``amps``
    (keys of ``AMP_DTYPES``), one row each (:func:`compare_detectors`, as the ``models`` part).
    FCOS's losses run in float32 (:func:`float32_losses`).
    """
    models = {name: build(name, device) for name in CONFIGS}
    models["FCOS"].losses = float32_losses(models["FCOS"].losses, device)
    cases = [("train", amp_train_step, b) for b in train_batch_sizes]
    cases += [("inference", amp_inference, b) for b in inference_batch_sizes]
    rows = []
    for amp in amps:
        for mode, fn, batch_size in cases:
            fields = {
                "device": device,
                "size": f"{size[0]}x{size[1]}",
                "batch": batch_size,
                "mode": mode,
                "amp": amp,
            }
            step = functools.partial(fn, device=device, amp=amp)
            batch = make_batch(*size, batch_size)
            rows.append(compare_detectors(models, step, batch, device, reps, fields))
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

    def by_stage():
        t = {}
        _staged_step(
            model, batch, optimizer, device, lambda s: measure(device, t.setdefault(s, {}))
        )
        return t

    whole_step = functools.partial(measure_call, device, _whole_step, model, batch, optimizer)
    times = alternate({"whole": whole_step, "staged": by_stage}, reps)
    whole = times["whole"]["runs"]
    stages = {s: [t[s] for t in times["staged"]["runs"]] for s in STEP_STAGES}
    row = {
        "device": device,
        "size": f"{size[0]}x{size[1]}",
        "batch": batch_size,
        "step_s": median(whole, "seconds"),
        "step_peak_mb": median(whole, "peak_mb"),
    }
    row.update({f"{s}_s": median(stages[s], "seconds") for s in STEP_STAGES})
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
    loss_path, elsewhere = sync_sites(stacks, _PACKAGE_DIR)
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
