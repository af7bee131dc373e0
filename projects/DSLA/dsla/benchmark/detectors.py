"""
DSLA against detectron2's FCOS on the same backbone (training step and inference), the DSLA label
assignment against the number of boxes, and where a DSLA training step spends its time.
"""

import functools
import json
import logging
import math
import multiprocessing as mp
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from detectron2.utils.events import EventStorage

from .inputs import CONFIGS, build, make_batch, random_instances
from .measure import alternate, measure, measure_call, median

__all__ = [
    "PROFILE_STAGES",
    "benchmark_assignment",
    "benchmark_models",
    "compare_detectors",
    "inference",
    "profile_dsla_step",
    "train_step",
]

logger = logging.getLogger(__name__)


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


def compare_detectors(
    models: Dict[str, torch.nn.Module],
    fn: Callable,
    batch: List[Dict],
    device: str,
    reps: int,
    fields: Dict,
) -> Dict:
    """
    ``fn(model, batch)`` for each of ``models`` (DSLA and FCOS, on ``device``), alternating the
    models within each repetition (:func:`alternate`), as one row: ``fields``, then each model's
    median time (``{name}_s``) and peak extra memory (``{name}_peak_mb``) over ``reps`` runs after
    one warm-up, and DSLA's time over FCOS's (``DSLA/FCOS_time``).
    """
    times = alternate(
        {
            name: functools.partial(measure_call, device, fn, model, batch)
            for name, model in models.items()
        },
        reps,
    )
    row = dict(fields)
    for name, t in times.items():
        row[f"{name}_s"] = median(t["runs"], "seconds")
        row[f"{name}_peak_mb"] = median(t["runs"], "peak_mb")
    row["DSLA/FCOS_time"] = row["DSLA_s"] / row["FCOS_s"]
    logger.info(json.dumps(row))
    return row


def benchmark_models(
    device: str, sizes: Sequence[Tuple[int, int]], batch_sizes: Sequence[int], reps: int
) -> List[Dict]:
    """
    Training step (forward + backward) and inference of DSLA R-50-FPN and FCOS R-50-FPN
    (``CONFIGS``, random weights) on the same inputs, at each of ``sizes`` (H, W) and
    ``batch_sizes``, one row each (:func:`compare_detectors`).
    """
    models = {name: build(name, device) for name in CONFIGS}
    rows = []
    for height, width in sizes:
        for batch_size in batch_sizes:
            batch = make_batch(height, width, batch_size)
            for mode, fn in (("train", train_step), ("inference", inference)):
                fields = {
                    "device": device,
                    "size": f"{height}x{width}",
                    "batch": batch_size,
                    "mode": mode,
                }
                rows.append(compare_detectors(models, fn, batch, device, reps, fields))
    return rows


def _assignment_worker(device, height, width, num_boxes, reps, queue, batch_size=1):
    # The assignment of the R-50 model's own head: its levels, strides, ranges and point offset.
    generator = build("DSLA", device).proposal_generator
    points = generator.make_points(
        [(math.ceil(height / s), math.ceil(width / s)) for s in generator.strides], device
    )
    rng = torch.Generator().manual_seed(num_boxes)
    gt = [random_instances(height, width, num_boxes, 80, rng).to(device) for _ in range(batch_size)]
    label = functools.partial(measure_call, device, generator.label_points, points, gt)
    t = alternate({"assignment": label}, reps)["assignment"]
    # Time: median after the warm-up run. Memory: the largest, which is the first run's in a fresh
    # process.
    queue.put(
        {
            "seconds": median(t["runs"], "seconds"),
            "peak_mb": max(r["peak_mb"] for r in [t["first"], *t["runs"]]),
            "num_points": sum(len(p) for p in points),
        }
    )


def benchmark_assignment(
    device: str, size: Tuple[int, int], box_counts: Sequence[int], reps: int, batch_size: int = 1
) -> List[Dict]:
    """
    Time and peak extra memory of the R-50 head's ``label_points`` on the points of an image of
    ``size`` (H, W), for each of ``box_counts``. Each box count in a fresh process, so that memory
    freed by an earlier run does not hide this one's; ``batch_size`` images of ``num_boxes`` boxes
    each, labelled together as in a training step.
    """
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


PROFILE_STAGES = ("backbone", "head", "assignment", "losses", "backward", "post-processing")


def _profiled_step(model, batch, device):
    """A DSLA training step and the inference post-processing, each of ``PROFILE_STAGES`` inside
    :func:`measure`: stage -> its result."""
    generator = model.proposal_generator
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
    return t


def profile_dsla_step(device: str, size: Tuple[int, int], batch_size: int, reps: int) -> List[Dict]:
    """
    Where a DSLA training step spends its time: the median time of each stage (backbone, head,
    label assignment, losses, backward) over ``reps`` runs after one warm-up, its share of the
    step, and the median time of inference post-processing.
    """
    model = build("DSLA", device)
    model.train()
    batch = make_batch(*size, batch_size)
    runs = alternate({"step": functools.partial(_profiled_step, model, batch, device)}, reps)
    med = {s: median([t[s] for t in runs["step"]["runs"]], "seconds") for s in PROFILE_STAGES}
    total = sum(med[s] for s in PROFILE_STAGES if s != "post-processing")
    row = {
        "device": device,
        "size": f"{size[0]}x{size[1]}",
        "batch": batch_size,
        "train_step_s": total,
    }
    row.update({f"{s}_s": med[s] for s in PROFILE_STAGES})
    row.update({f"{s}_pct": 100 * med[s] / total for s in PROFILE_STAGES if s != "post-processing"})
    logger.info(json.dumps(row))
    return [row]
