"""
What detectron2's ``tools/train_net.py`` defines, for DSLA and in the package, so that
``train_net.py``, ``tools/*`` and users' own scripts share it: the :class:`Trainer`,
:func:`build_evaluator`, :func:`setup` and the argument parser.
"""

import contextlib
import functools
import importlib.util
import json
import os
import weakref

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, default_setup, defaults, hooks
from detectron2.engine import default_argument_parser as _default_argument_parser
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
)
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import AtomicCheckpointer
from ..config import get_dsla_cfg
from ..data import (
    DSLADatasetMapper,
    add_register_coco_argument,
    check_num_classes,
    register_coco_datasets,
)
from ..evaluation import ScoreIoUEvaluator
from ..solver import build_optimizer
from .lazy import lazy_main

__all__ = [
    "Trainer",
    "add_require_gpu_argument",
    "build_evaluator",
    "default_argument_parser",
    "final_metrics",
    "main",
    "setup",
]


def default_argument_parser(epilog=None):
    """
    detectron2's arguments (``--config-file``, ``--resume``, ``--eval-only``, ``--num-gpus``,
    ``--num-machines``, ``--machine-rank``, ``--dist-url``, trailing overrides) plus
    ``--register-coco NAME JSON IMAGE_ROOT`` and ``--require-gpu``.
    """
    parser = _default_argument_parser(epilog)
    add_register_coco_argument(parser)
    add_require_gpu_argument(parser)
    return parser


def add_require_gpu_argument(parser):
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="fail if the config asks for CUDA and none is available, instead of running on the "
        "CPU",
    )


def build_evaluator(cfg, dataset_name, output_folder=None):
    """
    The evaluator of a dataset's ``evaluator_type`` (its metadata), as detectron2's
    ``tools/train_net.py`` picks
    it: "coco", "lvis" or "pascal_voc"; with ``TEST.SCORE_IOU_EVAL`` also a
        :class:`ScoreIoUEvaluator`.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type == "coco":
        # Without detectron2's compiled ops its fast COCOeval is unavailable; use pycocotools'
        # quietly.
        has_compiled_ops = importlib.util.find_spec("detectron2._C") is not None
        evaluator = COCOEvaluator(
            dataset_name, output_dir=output_folder, use_fast_impl=has_compiled_ops
        )
    elif evaluator_type == "lvis":
        evaluator = LVISEvaluator(dataset_name, output_dir=output_folder)
    elif evaluator_type == "pascal_voc":
        evaluator = PascalVOCDetectionEvaluator(dataset_name)
    else:
        raise ValueError(
            f"No box evaluator for dataset {dataset_name!r} with evaluator_type "
            f"{evaluator_type!r}; DSLA evaluates "
            "'coco', 'lvis' and 'pascal_voc' datasets (set "
            "MetadataCatalog.get(name).evaluator_type)."
        )
    if not cfg.TEST.SCORE_IOU_EVAL:
        return evaluator
    return DatasetEvaluators(
        [evaluator, ScoreIoUEvaluator(dataset_name, output_folder, topk=cfg.TEST.SCORE_IOU_TOPK)]
    )


@contextlib.contextmanager
def _ddp_without_device_ids_on_cpu(device):
    """
    detectron2 wraps the model in DDP with ``device_ids=[local rank]``, which PyTorch rejects for a
    CPU model; without device ids DDP works on the CPU with GLOO (``--num-gpus N`` without a GPU).
    """
    if device != "cpu":
        yield
        return
    create_ddp_model = defaults.create_ddp_model
    defaults.create_ddp_model = functools.partial(create_ddp_model, device_ids=None)
    try:
        yield
    finally:
        defaults.create_ddp_model = create_ddp_model


class Trainer(DefaultTrainer):
    """
    detectron2's DefaultTrainer with the DSLA data mapper and optimizers (``SOLVER.OPTIMIZER``,
    full-model gradient clipping) and :func:`build_evaluator`. Checkpoints are written atomically,
    the best one is kept with ``TEST.BEST_CHECKPOINT_METRIC``, and multi-process training also runs
    on the CPU (GLOO).
    """

    def __init__(self, cfg):
        with _ddp_without_device_ids_on_cpu(cfg.MODEL.DEVICE):
            super().__init__(cfg)

    def build_hooks(self):
        # Called by DefaultTrainer.__init__ before the hooks (PeriodicCheckpointer) take the
        # checkpointer.
        self.checkpointer = AtomicCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        ret = super().build_hooks()
        if self.cfg.TEST.BEST_CHECKPOINT_METRIC and self.cfg.TEST.EVAL_PERIOD > 0:
            # After the EvalHook, whose results it reads from the event storage, and before the
            # writers.
            after_eval = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)) + 1
            ret.insert(
                after_eval,
                hooks.BestCheckpointer(
                    self.cfg.TEST.EVAL_PERIOD,
                    self.checkpointer,
                    self.cfg.TEST.BEST_CHECKPOINT_METRIC,
                    mode=self.cfg.TEST.BEST_CHECKPOINT_MODE,
                ),
            )
        return ret

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=DSLADatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=DSLADatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)


def setup(args):
    """
    The frozen config of ``args.config_file`` (YAML) and ``args.opts``, with detectron2's
    ``default_setup``. A config asking for CUDA runs on the CPU when there is none, unless
    ``args.require_gpu``.
    """
    cfg = get_dsla_cfg(args.config_file, args.opts, freeze=True, require_gpu=args.require_gpu)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="dsla")
    return cfg


def main(args):
    """
    What ``train_net.py`` runs in each process: train (or with ``args.eval_only`` evaluate) the
    config of ``args.config_file``: a YAML config with ``KEY VALUE`` overrides through
    :class:`Trainer`, or a LazyConfig (``.py``) with ``key=value`` overrides as detectron2's
    ``tools/lazyconfig_train_net.py`` does.

    Returns:
        the evaluation results (``{"bbox": {"AP": ...}}``), if any
    """
    register_coco_datasets(args.register_coco)
    if args.config_file.endswith(".py"):
        return lazy_main(args)
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    check_num_classes(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def final_metrics(output_dir):
    """The last evaluation written to ``metrics.json`` by detectron2's writers, e.g. ``{"bbox/AP":
    ...}``."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        evaluations = [m for m in map(json.loads, f) if "bbox/AP" in m]
    if not evaluations:
        raise RuntimeError(f"No evaluation in {output_dir}/metrics.json; did training finish?")
    return evaluations[-1]
