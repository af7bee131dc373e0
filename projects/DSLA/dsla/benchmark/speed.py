"""
The CPU speed options side by side, alternating within one process (``--parts speed``): the
training step (through the trainer that training uses) of the quick start and the real-images model
at their training size and batch, and R-50 inference at 800x1333, in fp32 eager, bfloat16 autocast,
channels_last and both (optionally torch.compile of the backbone and head in the training steps),
and quick-start training iterations with the real loader and 0/1/2 workers; medians and minima over
the timed runs after the warm-ups, and the speed-up over fp32 eager.
"""

import functools
import itertools
import json
import logging
import os
import statistics
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from detectron2.utils.events import EventStorage

from ..data import register_shapes_datasets
from ..engine import Trainer, trainer_class
from ..solver import build_optimizer
from ..utils.precision import cpu_has_bfloat16, cpu_name
from .inputs import CONFIGS, benchmark_cfg, build_seeded, make_batch
from .measure import alternate, measure_call

__all__ = [
    "SPEED_INFERENCE_CONFIG",
    "SPEED_LOADER_STEPS",
    "SPEED_PARTS",
    "SPEED_TRAIN_CONFIGS",
    "SPEED_VARIANTS",
    "benchmark_speed",
    "speed_inference",
    "speed_loader",
    "speed_train_step",
]

logger = logging.getLogger(__name__)

# The training steps measured by default (name -> YAML; random weights, random inputs at the
# config's training size and batch); any other YAML can be named instead.
SPEED_TRAIN_CONFIGS = {
    "quickstart": "DSLA/dsla_quickstart_shapes.yaml",
    "trees": "DSLA/dsla_mobilenet_v2_trees.yaml",
}
SPEED_INFERENCE_CONFIG = CONFIGS["DSLA"]
SPEED_PARTS = ("train", "inference", "loader")
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


def _speed_model(cfg, channels_last=False, compiled=False):
    """The model of ``cfg`` with the weights of seed 0, in the memory format and compilation
    asked."""
    model = build_seeded(cfg)
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


def _seconds(runs):
    return [r["seconds"] for r in runs]


def _speed_rows(times, base, **fields):
    """
    Rows with the median and min of each variant's runs (``times`` as :func:`alternate` gives
    them), the speed-up over ``base`` and the first run's time.
    """
    base_runs = _seconds(times[base]["runs"])
    rows = []
    for name, t in times.items():
        runs = _seconds(t["runs"])
        row = {**fields, "variant": name}
        row["median_s"] = statistics.median(runs)
        row["min_s"] = min(runs)
        row["speedup"] = statistics.median(base_runs) / row["median_s"]
        row["speedup_min"] = min(base_runs) / row["min_s"]
        row["first_s"] = t["first"]["seconds"]
        rows.append(row)
        logger.info(json.dumps(row))
    return rows


def speed_train_step(
    name: str,
    config_file: str,
    variants: Sequence[Tuple[str, bool, bool, bool]],
    reps: int,
    size: Optional[Tuple[int, int]] = None,
    batch_size: Optional[int] = None,
) -> List[Dict]:
    """
    One training step (forward, backward, optimizer step, through the trainer that training uses)
    of ``config_file`` on a fixed random batch at its training size and batch (or ``size`` and
    ``batch_size``), for each variant ``(name, bf16, channels_last, compiled)``, alternating. Every
    variant starts from the same weights; its first step's losses are in ``first_loss``.
    """
    cfg = benchmark_cfg(config_file)
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

    times = alternate(
        {v: functools.partial(measure_call, "cpu", step, v) for v in trainers},
        reps,
        warmup=2 if reps > 1 else 1,
    )
    rows = _speed_rows(
        times, "fp32", part="train", config=name, size=f"{height}x{width}", batch=batch_size
    )
    for row in rows:
        row["first_loss"] = first_loss[row["variant"]]
    return rows


def speed_inference(
    config_file: str,
    size: Tuple[int, int],
    variants: Sequence[Tuple[str, bool, bool]],
    reps: int,
) -> List[Dict]:
    """Inference of one ``size`` image through ``config_file`` (random weights), per variant
    ``(name, bf16, channels_last)``, alternating; detections per image in ``detections``."""
    cfg = benchmark_cfg(config_file)
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

    times = alternate({v: functools.partial(measure_call, "cpu", infer, v) for v in models}, reps)
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


def speed_loader(
    config_file: str,
    workers: Sequence[int],
    threads: Sequence[int],
    precisions: Sequence[str],
    reps: int,
    num_images: int,
    steps: int,
    opts: Sequence[str] = (),
) -> List[Dict]:
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
            cfg = benchmark_cfg(config_file, "cpu", opts)
            base = ("fp32", cfg.DATALOADER.NUM_WORKERS, default_threads)
            trainers = {}
            for precision in precisions:
                model = _speed_model(cfg)
                for num_workers in workers:
                    cfg_w = benchmark_cfg(
                        config_file, "cpu", [*opts, "DATALOADER.NUM_WORKERS", str(num_workers)]
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
            times = alternate(
                {key: functools.partial(measure_call, "cpu", block, key) for key in trainers}, reps
            )
            for key, t in times.items():
                precision, num_workers, num_threads = key
                iter_s = [s / steps for s in _seconds(t["runs"])]
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


def benchmark_speed(
    reps: int,
    parts: Sequence[str] = SPEED_PARTS,
    configs: Sequence[str] = tuple(SPEED_TRAIN_CONFIGS),
    inference_size: Tuple[int, int] = (800, 1333),
    workers: Sequence[int] = (0, 1, 2),
    threads: Optional[Sequence[int]] = None,
    compiled: bool = False,
    quick: bool = False,
) -> Dict:
    """
    The CPU speed options side by side in this process, for each of ``parts`` (``SPEED_PARTS``):
    the training step of each of ``configs`` (names of ``SPEED_TRAIN_CONFIGS`` or YAML files) and
    R-50 inference at ``inference_size``, fp32 eager against bfloat16 autocast, channels_last and
    both (and torch.compile with ``compiled``), and the quick start's training iterations with each
    of ``workers`` loader workers and ``threads`` torch threads (default: torch's). bfloat16 is left
    out on a CPU without bfloat16 instructions. ``quick``: tiny inputs and few iterations, for
    tests.

    Returns:
        dict: the CPU (``cpu``, ``bf16_instructions``, ``threads``) and the ``rows`` of every part,
        each with its ``part``.
    """
    bf16 = cpu_has_bfloat16()
    if not bf16:
        logger.warning("This CPU has no bfloat16 instructions: measuring float32 variants only.")
    variants = [v for v in SPEED_VARIANTS if bf16 or not v[1]]
    train_variants = [(*v, False) for v in variants]
    if compiled:
        train_variants.append(("compile", False, False, True))
        if bf16:
            train_variants.append(("compile+bf16", True, False, True))
    report = {
        "cpu": cpu_name(),
        "bf16_instructions": bf16,
        "threads": torch.get_num_threads(),
        "rows": [],
    }
    for name in configs if "train" in parts else ():
        report["rows"] += speed_train_step(
            name,
            SPEED_TRAIN_CONFIGS.get(name, name),
            train_variants,
            reps,
            size=(128, 128) if quick else None,
            batch_size=2 if quick else None,
        )
    if "inference" in parts:
        size = (128, 160) if quick else inference_size
        report["rows"] += speed_inference(SPEED_INFERENCE_CONFIG, size, variants, reps)
    if "loader" in parts:
        report["rows"] += speed_loader(
            SPEED_TRAIN_CONFIGS["quickstart"],
            workers,
            threads or [torch.get_num_threads()],
            ["fp32", "bf16"] if bf16 else ["fp32"],
            reps,
            num_images=4 if quick else 64,
            steps=2 if quick else SPEED_LOADER_STEPS,
            opts=["SOLVER.IMS_PER_BATCH", "2"] if quick else (),
        )
    return report
