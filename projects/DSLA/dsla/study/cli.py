"""The command line of ``tools/study.py``: which variants, datasets, seeds and budget; then run and
report."""

import argparse
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from detectron2.utils.logger import setup_logger

from ..data import add_register_coco_argument
from .datasets import study_dataset
from .report import write_report
from .runs import StudyDataset, execute_runs, plan_runs
from .variants import (
    BUILTIN_VARIANTS,
    Variant,
    format_override_value,
    load_variant_spec,
    parse_override_value,
    parse_variant,
)

__all__ = ["argument_parser", "datasets_from_args", "main", "run_study", "variants_from_args"]

logger = logging.getLogger(__name__)


def _comma_list(text: str) -> List[str]:
    return [item for item in (s.strip() for s in text.split(",")) if item]


def argument_parser() -> argparse.ArgumentParser:
    builtins = "\n".join(
        f"  {v.name:<20} {v.config_file}"
        + "".join(f" {k} {format_override_value(val)}" for k, val in v.opts)
        for v in BUILTIN_VARIANTS
    )
    parser = argparse.ArgumentParser(
        description="Train variants x seeds x datasets with equal budgets, each in a fresh "
        "process, and report "
        "COCO AP and score-IoU consistency as mean ± std over seeds (study.md, study.json, plots). "
        "Finished runs "
        "are kept and skipped, so a study resumes where it stopped.",
        epilog=f"built-in variants:\n{builtins}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output", default="output/study", help="directory of the runs and the report"
    )
    parser.add_argument(
        "--datasets",
        type=_comma_list,
        default=None,
        help="comma-separated datasets: 'trees' (the real aerial tree crowns with the real-images "
        "configs) or families FAMILY, each the registered FAMILY_train / FAMILY_val with the "
        "quick-start configs (default: shapes, unless --dataset-pair is given)",
    )
    parser.add_argument(
        "--dataset-pair",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "TRAIN", "VAL"),
        help="a dataset labelled NAME: train on the registered TRAIN, evaluate on VAL (repeatable)",
    )
    add_register_coco_argument(parser)
    parser.add_argument(
        "--input-size",
        nargs=3,
        action="append",
        default=[],
        metavar=("DATASET", "SHORT", "LONGEST"),
        help="input size for one dataset: shorter side SHORT, longest side at most LONGEST "
        "(default: the config's)",
    )
    parser.add_argument(
        "--variants",
        type=_comma_list,
        default=None,
        help="comma-separated variants to run (default: the built-in ones and those of --variant / "
        "--spec)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'NAME=BASE KEY VALUE ...'",
        help="add a variant: BASE (a variant or a .yaml config) with overrides, as one quoted "
        "argument, e.g. "
        "'dsla-r32=dsla MODEL.DSLA.REGRESS_RANGES [[0,32],[32,64],[64,128],[128,256],[256,.inf]]' "
        "(repeatable)",
    )
    parser.add_argument(
        "--spec", help="a YAML/JSON file of more variants (see dsla.study.load_variant_spec)"
    )
    parser.add_argument("--iters", type=int, default=1500, help="SOLVER.MAX_ITER of every run")
    parser.add_argument(
        "--seeds",
        type=lambda s: [int(v) for v in _comma_list(s)],
        default=[1, 2, 3],
        help="comma-separated SEEDs",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="MODEL.DEVICE"
    )
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first run that fails")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the report from finished runs only"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    return parser


def variants_from_args(args) -> List[Variant]:
    """The variants to run: built-in, then ``--spec``'s, then ``--variant``'s, restricted to
    ``--variants``."""
    known = {v.name: v for v in BUILTIN_VARIANTS}
    added = load_variant_spec(args.spec, known) if args.spec else []
    known.update((v.name, v) for v in added)
    for text in args.variant:
        variant = parse_variant(text, known)
        known[variant.name] = variant
    if args.variants is None:
        return list(known.values())
    unknown = [name for name in args.variants if name not in known]
    if unknown:
        raise ValueError(f"Unknown variants {unknown}; known: {sorted(known)}")
    return [known[name] for name in args.variants]


def datasets_from_args(args) -> List[StudyDataset]:
    """The datasets of ``--datasets`` and ``--dataset-pair``, with their ``--input-size``."""
    sizes = {name: (int(short), int(longest)) for name, short, longest in args.input_size}
    families = (
        args.datasets if args.datasets is not None else ([] if args.dataset_pair else ["shapes"])
    )
    datasets = [study_dataset(name, sizes.get(name)) for name in families]
    datasets += [
        StudyDataset(name, train, val, sizes.get(name)) for name, train, val in args.dataset_pair
    ]
    unknown = set(sizes) - {d.name for d in datasets}
    if unknown:
        raise ValueError(f"--input-size for datasets not in the study: {sorted(unknown)}")
    return datasets


def _overrides(opts: Sequence[str]) -> List[Tuple[str, Any]]:
    if len(opts) % 2:
        raise ValueError(f"Config overrides must be KEY VALUE pairs, got {list(opts)}")
    return [(key, parse_override_value(value)) for key, value in zip(opts[0::2], opts[1::2])]


def run_study(
    variants: Sequence[Variant],
    datasets: Sequence[StudyDataset],
    seeds: Sequence[int],
    iters: int,
    output_dir: str,
    *,
    device: str = "cpu",
    opts: Sequence[Tuple[str, Any]] = (),
    register_coco: Sequence[Sequence[str]] = (),
    fail_fast: bool = False,
    report_only: bool = False,
    command: Optional[str] = None,
    **execute_kwargs,
) -> Dict[str, Any]:
    """
    Train the runs of :func:`dsla.study.plan_runs` that are not finished (unless ``report_only``),
    then write the report of every finished run of ``iters`` iterations in ``output_dir``
    (:func:`dsla.study.write_report`). Returns the report with the run ``outcome`` of this call.
    """
    start = time.perf_counter()
    outcome = {"skipped": [], "finished": [], "failed": []}
    if not report_only:
        runs = plan_runs(
            datasets,
            variants,
            seeds,
            iters,
            output_dir,
            device=device,
            opts=opts,
            register_coco=register_coco,
        )
        outcome = execute_runs(runs, fail_fast=fail_fast, **execute_kwargs)
        logger.info(
            f"{len(outcome['finished'])} runs trained, {len(outcome['skipped'])} finished before, "
            f"{len(outcome['failed'])} failed"
            + "".join(f"\n  failed: {r.label}" for r in outcome["failed"])
        )
    report = write_report(
        output_dir,
        iters=iters,
        variant_order=[v.name for v in variants],
        wall_minutes=(time.perf_counter() - start) / 60,
        command=command,
    )
    if not report["runs"]:
        logger.warning(
            f"No finished run of {iters} iterations in {output_dir} (give the --iters the runs "
            "used)"
        )
    logger.info(f"Report of {len(report['runs'])} runs: {os.path.join(output_dir, 'study.md')}")
    return {**report, "outcome": outcome}


def main(args) -> int:
    """``tools/study.py``: run the study of ``args``; the exit status is 1 if a run failed."""
    os.makedirs(args.output, exist_ok=True)
    setup_logger(os.path.join(args.output, "study_log.txt"), name="dsla")
    report = run_study(
        variants_from_args(args),
        datasets_from_args(args),
        args.seeds,
        args.iters,
        args.output,
        device=args.device,
        opts=_overrides(args.opts),
        register_coco=args.register_coco,
        fail_fast=args.fail_fast,
        report_only=args.report_only,
        command=" ".join(["python tools/study.py", *sys.argv[1:]]),
    )
    return 1 if report["outcome"]["failed"] else 0
