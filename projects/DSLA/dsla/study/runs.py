"""
Planning and running a study: one run per (seed, dataset, variant), each trained and evaluated in a
fresh process so that no state (RNGs, caches, allocator, registered datasets) carries from one run
to the next. A run writes ``result.json`` when it finishes; a run whose file matches is not trained
again.
"""

import json
import logging
import multiprocessing
import os
import platform
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from detectron2.evaluation import inference_on_dataset

from ..checkpoint import AtomicCheckpointer
from ..config import get_dsla_cfg
from ..data import check_num_classes, dataset_classes, model_num_classes, register_coco_datasets
from ..engine import Trainer, default_argument_parser, final_metrics, setup
from ..evaluation import ScoreIoUEvaluator
from ..utils.file_io import atomic_write_text
from .variants import Variant, resolve_config_file

__all__ = [
    "BEFORE_NMS_OVERRIDES",
    "BEFORE_NMS_PREFIX",
    "RESULT_FILE_NAME",
    "RunFailed",
    "StudyDataset",
    "StudyRun",
    "add_before_nms",
    "evaluate_before_nms",
    "execute_runs",
    "is_finished",
    "lacks_before_nms",
    "load_result",
    "plan_runs",
    "run_in_subprocess",
    "train_run",
]

logger = logging.getLogger(__name__)

RESULT_FILE_NAME = "result.json"
ERROR_FILE_NAME = "error.txt"
FINAL_WEIGHTS = "model_final.pth"
# The paper's claim is about the ranking NMS acts on: when the top-scored of a ground truth's
# candidates is not its best-localized one, NMS keeps the worse box. So each run is also evaluated
# with NMS disabled (both detectors' keys; the one a model does not read is inert), keeping up to
# 1000 candidates per image.
BEFORE_NMS_PREFIX = "score_iou_before_nms/"
# A result without this figure was evaluated before NMS by an earlier version of the study, or not
# at all.
BEFORE_NMS_NEWEST = BEFORE_NMS_PREFIX + "gt_pair_concordance"
BEFORE_NMS_OVERRIDES: Tuple[Tuple[str, Any], ...] = (
    ("MODEL.DSLA.NMS_THRESH_TEST", 1.0),
    ("MODEL.FCOS.NMS_THRESH_TEST", 1.0),
    ("MODEL.RETINANET.NMS_THRESH_TEST", 1.0),
    ("TEST.DETECTIONS_PER_IMAGE", 1000),
)


@dataclass(frozen=True)
class StudyDataset:
    """
    A train/validation pair of registered datasets, labelled ``name`` in the study's output.
    ``input_size`` (shorter side, longest side) replaces the config's input sizes for this dataset.
    ``configs`` replaces a variant's base config by this dataset's own (e.g. the quick-start
    configs by the real-images configs with their ImageNet backbone and recipe); the variant's
    overrides still apply. Each run's process registers its datasets anew: they must be registered
    by importing ``dsla`` (as the built-in ones are) or be given as ``register_coco`` to
    :func:`plan_runs`.
    """

    name: str
    train: str
    test: str
    input_size: Optional[Tuple[int, int]] = None
    configs: Tuple[Tuple[str, str], ...] = ()

    def config_file(self, variant_config: str) -> str:
        """The config a variant based on ``variant_config`` trains on this dataset."""
        if not self.configs:
            return variant_config
        mapping = dict(self.configs)
        if variant_config not in mapping:
            raise ValueError(
                f"Dataset {self.name!r} trains its own configs {sorted(mapping.values())}; it has "
                f"none for variants based on {variant_config!r} (known bases: {sorted(mapping)})"
            )
        return mapping[variant_config]

    @classmethod
    def family(cls, name: str, input_size: Optional[Tuple[int, int]] = None) -> "StudyDataset":
        """The datasets ``{name}_train`` and ``{name}_val``, as ``shapes_train`` / ``shapes_val``
        are named."""
        return cls(name, f"{name}_train", f"{name}_val", input_size)

    def overrides(self, num_classes_key: str) -> List[Tuple[str, Any]]:
        """What points a model at this dataset: its splits, its class count (under
        ``num_classes_key``), sizes."""
        opts = [
            ("DATASETS.TRAIN", (self.train,)),
            ("DATASETS.TEST", (self.test,)),
            (num_classes_key, len(dataset_classes(self.train))),
        ]
        if self.input_size is not None:
            short, longest = self.input_size
            opts += [
                ("INPUT.MIN_SIZE_TRAIN", (short,)),
                ("INPUT.MAX_SIZE_TRAIN", longest),
                ("INPUT.MIN_SIZE_TEST", short),
                ("INPUT.MAX_SIZE_TEST", longest),
            ]
        return opts


@dataclass(frozen=True)
class StudyRun:
    """
    One training of a study. ``opts`` are all its config overrides (variant, dataset, common, then
    the study's budget and evaluation settings); ``SEED``, ``OUTPUT_DIR`` and ``MODEL.DEVICE`` are
    added when it is built.
    """

    dataset: StudyDataset
    variant: Variant
    seed: int
    iters: int
    output_dir: str
    opts: Tuple[Tuple[str, Any], ...]
    device: str = "cpu"
    register_coco: Tuple[Tuple[str, str, str], ...] = field(default=())

    @property
    def result_file(self) -> str:
        return os.path.join(self.output_dir, RESULT_FILE_NAME)

    @property
    def config_file(self) -> str:
        """The config file this run trains: the variant's, or the dataset's own for it."""
        return self.dataset.config_file(self.variant.config_file)

    @property
    def label(self) -> str:
        return f"{self.dataset.name}/{self.variant.name}/seed{self.seed}"

    def config_opts(self) -> List[Any]:
        """The flat ``[KEY, VALUE, ...]`` overrides of this run's config."""
        opts = [item for pair in self.opts for item in pair]
        return opts + [
            "SEED",
            self.seed,
            "OUTPUT_DIR",
            self.output_dir,
            "MODEL.DEVICE",
            self.device,
        ]

    def build_cfg(self):
        return get_dsla_cfg(resolve_config_file(self.config_file), self.config_opts())

    def record(self) -> Dict[str, Any]:
        """What identifies this run in its ``result.json``: a stored run is reused only if these
        match."""
        # Through JSON, so that tuples and lists compare equal whether they were just built or read
        # back.
        return json.loads(
            json.dumps(
                {
                    "dataset": self.dataset.name,
                    "variant": self.variant.name,
                    "seed": self.seed,
                    "iterations": self.iters,
                    "config_file": self.config_file,
                    "variant_overrides": [list(pair) for pair in self.variant.opts],
                    "overrides": [list(pair) for pair in self.opts],
                }
            )
        )


def plan_runs(
    datasets: Sequence[StudyDataset],
    variants: Sequence[Variant],
    seeds: Sequence[int],
    iters: int,
    output_dir: str,
    *,
    device: str = "cpu",
    opts: Sequence[Tuple[str, Any]] = (),
    register_coco: Sequence[Sequence[str]] = (),
) -> List[StudyRun]:
    """
    The runs of a study, seed by seed (every variant and dataset once before the next seed, so that
    an interrupted study has comparable results early). Each run's config is built here, so that a
    mistyped key or a value of the wrong type fails before hours of training rather than in the
    middle.

    Every run gets the same budget, ``SOLVER.MAX_ITER = iters`` (the batch and schedule are the
    variants' configs', which the built-in variants share), is evaluated once after training
    (``TEST.EVAL_PERIOD 0``) with ``TEST.SCORE_IOU_EVAL``, and writes to
    ``output_dir/<dataset>/<variant>/seed<k>``. ``opts`` apply to every run, after the variant's and
    the dataset's overrides.
    """
    register_coco = tuple(tuple(spec) for spec in register_coco)
    register_coco_datasets(register_coco)
    runs = []
    for seed in seeds:
        for dataset in datasets:
            for variant in variants:
                variant_cfg = get_dsla_cfg(
                    resolve_config_file(dataset.config_file(variant.config_file)),
                    [*variant.flat_opts(), "MODEL.DEVICE", device],
                )
                num_classes_key, _ = model_num_classes(variant_cfg)
                run = StudyRun(
                    dataset=dataset,
                    variant=variant,
                    seed=int(seed),
                    iters=int(iters),
                    output_dir=os.path.abspath(
                        os.path.join(output_dir, dataset.name, variant.name, f"seed{seed}")
                    ),
                    opts=(
                        *variant.opts,
                        *dataset.overrides(num_classes_key),
                        *opts,
                        ("SOLVER.MAX_ITER", int(iters)),
                        ("TEST.EVAL_PERIOD", 0),
                        ("TEST.SCORE_IOU_EVAL", True),
                    ),
                    device=device,
                    register_coco=register_coco,
                )
                run.build_cfg()
                runs.append(run)
    return runs


def load_result(path: str) -> Optional[Dict[str, Any]]:
    """A ``result.json``, or None if it is missing or unreadable (e.g. cut short by a full disk)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_finished(run: StudyRun) -> bool:
    """Whether ``run`` has a result with the same dataset, variant, seed, iterations and
    overrides."""
    result = load_result(run.result_file)
    return result is not None and all(result.get(k) == v for k, v in run.record().items())


def machine_info(device: str) -> Dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device)
        if torch.device(device).type == "cuda"
        else device,
    }


def train_run(run: StudyRun) -> Dict[str, Any]:
    """
    Train and evaluate ``run`` in this process with :class:`dsla.engine.Trainer`, then write its
    ``result.json`` (the metrics of the final evaluation, the training minutes, the iterations and
    the overrides).
    """
    start = time.perf_counter()
    # detectron2 appends to metrics.json; a rerun (after a crash, or of a stale result) starts it
    # anew so that its training curves and evaluation are this run's alone.
    metrics_file = os.path.join(run.output_dir, "metrics.json")
    if os.path.exists(metrics_file):
        os.remove(metrics_file)
    register_coco_datasets(run.register_coco)
    # The engine's setup takes train_net.py's arguments (default_setup logs them); the overrides
    # stay Python values rather than text, so that e.g. an infinite level range reaches the config
    # as it is.
    args = default_argument_parser().parse_args(
        ["--config-file", resolve_config_file(run.config_file)]
    )
    args.opts = run.config_opts()
    cfg = setup(args)
    check_num_classes(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    metrics = {
        k: v
        for k, v in final_metrics(cfg.OUTPUT_DIR).items()
        if k.startswith(("bbox/", "score_iou/"))
    }
    del trainer
    metrics.update(evaluate_before_nms(run))
    result = {
        **run.record(),
        "metrics": metrics,
        "minutes": (time.perf_counter() - start) / 60,
        "machine": machine_info(cfg.MODEL.DEVICE),
    }
    _write_result(run, result)
    logger.info(
        f"{run.label}: AP {metrics.get('bbox/AP', float('nan')):.1f} in {result['minutes']:.1f} min"
    )
    return result


def evaluate_before_nms(run: StudyRun) -> Dict[str, float]:
    """
    The :class:`ScoreIoUEvaluator` figures of a trained run's final weights with NMS disabled
    (:data:`BEFORE_NMS_OVERRIDES`), keyed ``score_iou_before_nms/<figure>``. Its pairs are saved in
    ``<run>/inference_before_nms``.
    """
    weights = os.path.join(run.output_dir, FINAL_WEIGHTS)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{run.label}: no final weights {weights} to evaluate before NMS")
    register_coco_datasets(run.register_coco)
    opts = (
        run.config_opts()
        + [item for pair in BEFORE_NMS_OVERRIDES for item in pair]
        + ["MODEL.WEIGHTS", weights]
    )
    cfg = get_dsla_cfg(resolve_config_file(run.config_file), opts, freeze=True)
    model = Trainer.build_model(cfg)
    AtomicCheckpointer(model).load(weights)
    evaluator = ScoreIoUEvaluator(
        run.dataset.test,
        os.path.join(run.output_dir, "inference_before_nms"),
        topk=cfg.TEST.SCORE_IOU_TOPK,
    )
    results = inference_on_dataset(
        model, Trainer.build_test_loader(cfg, run.dataset.test), evaluator
    )
    return {BEFORE_NMS_PREFIX + k: v for k, v in results["score_iou"].items()}


def lacks_before_nms(run: StudyRun) -> bool:
    """Whether a finished run (of an earlier version of the study) has final weights but not all the
    figures before NMS of this version."""
    result = load_result(run.result_file)
    return (
        result is not None
        and BEFORE_NMS_NEWEST not in result.get("metrics", {})
        and os.path.isfile(os.path.join(run.output_dir, FINAL_WEIGHTS))
    )


def add_before_nms(run: StudyRun) -> Dict[str, Any]:
    """Add :func:`evaluate_before_nms`'s figures to a finished run's ``result.json``; returns the
    new result."""
    result = load_result(run.result_file)
    result["metrics"].update(evaluate_before_nms(run))
    _write_result(run, result)
    return result


def _write_result(run: StudyRun, result: Dict[str, Any]):
    # A result file is complete or absent.
    atomic_write_text(run.result_file, json.dumps(result, indent=2))


def _exit_with_parent(parent_pid: int, period: float):
    """Poll, and end this process (with its loader workers) once the study that started it is
    gone."""
    while True:
        time.sleep(period)
        if os.getppid() != parent_pid:
            os._exit(3)


def _in_child(target: Callable[[StudyRun], Any], run: StudyRun, parent_pid: int, period: float):
    # A killed study (e.g. by a job scheduler) would otherwise leave its run training on as an
    # orphan, competing for the CPU with the study's next invocation and writing into the run
    # directory that invocation retrains.
    threading.Thread(target=_exit_with_parent, args=(parent_pid, period), daemon=True).start()
    try:
        target(run)
    except BaseException:
        os.makedirs(run.output_dir, exist_ok=True)
        with open(os.path.join(run.output_dir, ERROR_FILE_NAME), "w") as f:
            f.write(traceback.format_exc())
        raise


class RunFailed(RuntimeError):
    """A run of a study did not finish."""


def run_in_subprocess(
    run: StudyRun,
    target: Callable[[StudyRun], Any] = train_run,
    *,
    orphan_check_period: float = 2.0,
):
    """
    ``target(run)`` (by default :func:`train_run`) in a fresh process (multiprocessing's spawn:
    nothing is inherited but the environment and ``run``), which ends itself within
    ``orphan_check_period`` seconds if this process dies. Raises :class:`RunFailed` if it does not
    finish, with the last line of its traceback.
    """
    process = multiprocessing.get_context("spawn").Process(
        target=_in_child, args=(target, run, os.getpid(), orphan_check_period), name=run.label
    )
    process.start()
    try:
        process.join()
    except BaseException:  # e.g. KeyboardInterrupt: the run must not outlive the study
        process.terminate()
        process.join()
        raise
    if process.exitcode != 0:
        error_file = os.path.join(run.output_dir, ERROR_FILE_NAME)
        last_line = ""
        if os.path.exists(error_file):
            with open(error_file) as f:
                last_line = f.read().strip().splitlines()[-1:]
        raise RunFailed(
            f"{run.label} exited with code {process.exitcode}: "
            f"{' '.join(last_line) or 'no traceback'} "
            f"(see {error_file} and {os.path.join(run.output_dir, 'log.txt')})"
        )


def _add_before_nms_in_subprocess(run: StudyRun):
    run_in_subprocess(run, add_before_nms)


def execute_runs(
    runs: Sequence[StudyRun],
    *,
    fail_fast: bool = False,
    launch: Callable[[StudyRun], None] = run_in_subprocess,
    complete: Callable[[StudyRun], None] = _add_before_nms_in_subprocess,
) -> Dict[str, List[StudyRun]]:
    """
    Run ``runs`` one after the other with ``launch``, skipping those already finished
    (:func:`is_finished`); a finished run of an earlier version of the study that has its weights
    but no before-NMS figures gets them with ``complete`` (:func:`add_before_nms` in a fresh
    process). A run that fails is logged and the others still run, unless ``fail_fast``.

    Returns:
        {"skipped": [...], "finished": [...], "failed": [...]}
    """
    outcome = {"skipped": [], "finished": [], "failed": []}
    for index, run in enumerate(runs, 1):
        prefix = f"[{index}/{len(runs)}] {run.label}"
        if is_finished(run):
            if not lacks_before_nms(run):
                logger.info(f"{prefix}: finished before, skipped")
                outcome["skipped"].append(run)
                continue
            step, kind, what = complete, "skipped", "finished before; evaluating it before NMS"
        else:
            # A result of other iterations or overrides is stale; remove it so that it cannot
            # outlive a failed rerun.
            for stale in (run.result_file, os.path.join(run.output_dir, ERROR_FILE_NAME)):
                if os.path.exists(stale):
                    os.remove(stale)
            step, kind, what = launch, "finished", f"training {run.iters} iterations"
        logger.info(f"{prefix}: {what}")
        try:
            step(run)
        except Exception as e:
            if fail_fast:
                raise
            logger.error(f"{prefix} failed, continuing with the next run: {e}")
            outcome["failed"].append(run)
            continue
        outcome[kind].append(run)
    return outcome
