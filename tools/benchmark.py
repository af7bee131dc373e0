#!/usr/bin/env python
"""
Speed and memory of DSLA against detectron2's FCOS on the same backbone, and of the DSLA label
assignment; each part printed as a table and written to ``--output`` as JSON. The parts and how
they are measured: ``dsla.benchmark`` and ``docs/benchmarks.md`` (``amp`` and ``step``, the GPU
check's: ``docs/gpu.md``).

    python tools/benchmark.py                       # everything, on the CPU (and CUDA if present)
    python tools/benchmark.py --devices cuda --reps 10
    python tools/benchmark.py --quick               # seconds; for tests
    python tools/benchmark.py --parts export --reps 10 --output output/export_latency.json
    python tools/benchmark.py --parts speed --reps 5 --output output/speed.json
"""

import argparse
import json
import logging
import os

import torch

from detectron2.utils.logger import setup_logger

from dsla import benchmark

logger = logging.getLogger("dsla.benchmark")
PARTS = ["models", "assignment", "profile", "export", "amp", "step", "speed"]


def size(text):
    """(H, W) of ``HxW``."""
    h, w = text.lower().split("x")
    return int(h), int(w)


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", nargs="+", help="default: cpu, and cuda if available")
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=size,
        default=[(512, 640), (800, 1333)],
        help="HxW of the model inputs",
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--reps", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--box-counts", nargs="+", type=int, default=[10, 100, 1000, 3000])
    parser.add_argument("--assignment-size", type=size, default="800x1333")
    parser.add_argument("--parts", nargs="+", default=PARTS[:3], choices=PARTS)
    parser.add_argument(
        "--export-size", type=size, default="800x1333", help="HxW of the input in the export part"
    )
    configs = list(benchmark.EXPORT_CONFIGS)
    parser.add_argument("--export-models", nargs="+", default=configs, choices=configs)
    parser.add_argument(
        "--export-score-thresh",
        type=float,
        default=None,
        help="MODEL.DSLA.SCORE_THRESH_TEST in the export part (default: the configs' value)",
    )
    # The GPU check's parts and arguments (tools/gpu_check.sh).
    dtypes = list(benchmark.AMP_DTYPES)
    parser.add_argument(
        "--amp-dtypes",
        nargs="+",
        default=dtypes,
        choices=dtypes,
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

    speed = parser.add_argument_group("--parts speed (CPU speed options)")
    parts = list(benchmark.SPEED_PARTS)
    speed.add_argument("--speed-parts", nargs="+", default=parts, choices=parts)
    names = list(benchmark.SPEED_TRAIN_CONFIGS)
    speed.add_argument(
        "--speed-configs",
        nargs="+",
        default=names,
        help=f"training steps to time: names ({', '.join(names)}) or YAML files",
    )
    speed.add_argument(
        "--speed-inference-size", type=size, default="800x1333", help="HxW of R-50 inference"
    )
    speed.add_argument("--speed-workers", nargs="+", type=int, default=[0, 1, 2])
    speed.add_argument("--speed-threads", nargs="+", type=int, help="default: torch's thread count")
    speed.add_argument(
        "--speed-compile",
        action="store_true",
        help="also torch.compile (backbone and head) in the training steps: minutes of compilation",
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dsla")
    if args.quick:
        args.sizes, args.batch_sizes, args.reps = [(128, 160)], [1], 1
        args.box_counts, args.assignment_size, args.export_size = [10, 100], (128, 160), (128, 160)
        args.step_batch = min(args.step_batch, 2)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes, reps = args.sizes, args.reps
    report = benchmark.new_report()
    for device in devices:
        if "models" in args.parts:
            report["models"] += benchmark.benchmark_models(device, sizes, args.batch_sizes, reps)
        if "assignment" in args.parts:
            report["assignment"] += benchmark.benchmark_assignment(
                device, args.assignment_size, args.box_counts, reps, args.assignment_batch
            )
        if "profile" in args.parts:
            batch_size = args.batch_sizes[0]
            report["profile"] += benchmark.profile_dsla_step(device, sizes[-1], batch_size, reps)
        if "amp" in args.parts:
            report["amp"] += benchmark.benchmark_amp(
                device,
                sizes[-1],
                args.batch_sizes,
                args.inference_batch_sizes or args.batch_sizes,
                args.amp_dtypes,
                reps,
            )
        if "step" in args.parts:
            batch_size = args.step_batch
            report["step"] += benchmark.profile_training_step(device, sizes[-1], batch_size, reps)
    output_dir = os.path.dirname(os.path.abspath(args.output))
    if "export" in args.parts:
        report["export"] = benchmark.benchmark_export(
            args.export_models,
            args.export_size,
            reps,
            os.path.join(output_dir, "export_benchmark"),
            args.export_score_thresh,
        )
    if "speed" in args.parts:
        report["speed"] = benchmark.benchmark_speed(
            reps,
            parts=args.speed_parts,
            configs=args.speed_configs,
            inference_size=args.speed_inference_size,
            workers=args.speed_workers,
            threads=args.speed_threads,
            compiled=args.speed_compile,
            quick=args.quick,
        )

    tables = benchmark.format_report(report)
    if tables:
        print(tables)
    os.makedirs(output_dir, exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    logger.info(f"Wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
