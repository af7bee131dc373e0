#!/usr/bin/env python
"""
Speed and memory of DSLA against detectron2's FCOS on the same backbone, and of the DSLA label
assignment.

    python tools/benchmark.py                       # everything, on the CPU (and CUDA if present)
    python tools/benchmark.py --devices cuda --reps 10
    python tools/benchmark.py --quick               # seconds; for tests
    python tools/benchmark.py --parts export --reps 10 --output output/export_latency.json

Four parts, each printed as a table and written to ``--output`` as JSON:

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

Peak memory is CUDA's ``max_memory_allocated`` on GPUs; on the CPU, the process's peak resident
memory (``VmHWM``, reset before each run through ``/proc/self/clear_refs``) minus its resident
memory before the run.
"""

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import statistics
import time
from contextlib import contextmanager

import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

from dsla import get_dsla_cfg
from dsla.export import (
    FORMATS,
    ExportedModel,
    compare_detections,
    eager_detections,
    export_model,
    measure_latency,
)

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


def _assignment_worker(device, height, width, num_boxes, reps, queue):
    # The assignment of the R-50 model's own head: its levels, strides, ranges and point offset.
    generator = build("DSLA", device).proposal_generator
    points = generator.make_points(
        [(math.ceil(height / s), math.ceil(width / s)) for s in generator.strides], device
    )
    inst = _random_instances(height, width, num_boxes, 80, torch.Generator().manual_seed(num_boxes))
    gt = [inst.to(device)]
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


def benchmark_assignment(device, size, box_counts, reps):
    """Each box count in a fresh process, so that memory freed by an earlier run does not hide this
    one's."""
    ctx = mp.get_context("spawn")
    rows = []
    for num_boxes in box_counts:
        queue = ctx.Queue()
        proc = ctx.Process(target=_assignment_worker, args=(device, *size, num_boxes, reps, queue))
        proc.start()
        result = queue.get()
        proc.join()
        row = {
            "device": device,
            "size": f"{size[0]}x{size[1]}",
            "num_points": result["num_points"],
            "num_boxes": num_boxes,
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
# reporting


def format_table(rows, columns):
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


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
        choices=["models", "assignment", "profile", "export"],
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
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one repetition (for tests)"
    )
    parser.add_argument(
        "--output", default="output/benchmark.json", help="JSON file for the results"
    )
    return parser


def _hw(text):
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dsla")
    if args.quick:
        args.sizes, args.batch_sizes, args.reps = ["128x160"], [1], 1
        args.box_counts, args.assignment_size, args.export_size = [10, 100], "128x160", "128x160"
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
    }
    for device in devices:
        if "models" in args.parts:
            report["models"] += benchmark_models(device, sizes, args.batch_sizes, args.reps)
        if "assignment" in args.parts:
            report["assignment"] += benchmark_assignment(
                device, _hw(args.assignment_size), args.box_counts, args.reps
            )
        if "profile" in args.parts:
            report["profile"] += profile_dsla_step(
                device, sizes[-1], args.batch_sizes[0], args.reps
            )
    if "export" in args.parts:
        export_dir = os.path.join(os.path.dirname(os.path.abspath(args.output)), "export_benchmark")
        report["export"] = benchmark_export(
            args.export_models,
            _hw(args.export_size),
            args.reps,
            export_dir,
            args.export_score_thresh,
        )

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
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    logger.info(f"Wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
