"""
What detectron2's ``tools/train_net.py`` defines, for DSLA and in the package, so that
``train_net.py``, ``tools/*`` and users' own scripts share it: the :class:`Trainer`,
:func:`build_evaluator`, :func:`setup` and the argument parser.
"""

import json
import os
import weakref

import torch

from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, default_setup, hooks
from detectron2.engine import default_argument_parser as _default_argument_parser
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import AtomicCheckpointer
from ..config import get_dsla_cfg
from ..data import (
    DSLADatasetMapper,
    add_dataset_arguments,
    check_num_classes,
    register_datasets_from_args,
)
from ..evaluation import build_evaluator
from ..solver import build_optimizer
from ..utils.precision import inference_autocast
from .amp import amp_trainer_for_default_trainer, trainer_class
from .ddp import cpu_ddp_for_default_trainer
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
    ``--register-coco NAME JSON IMAGE_ROOT``, ``--register-voc NAME DIR CLASSES`` and
    ``--require-gpu``.
    """
    parser = _default_argument_parser(epilog)
    add_dataset_arguments(parser)
    add_require_gpu_argument(parser)
    return parser


def add_require_gpu_argument(parser):
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="fail if the config asks for CUDA and none is available, instead of running on the "
        "CPU",
    )


class Trainer(DefaultTrainer):
    """
    detectron2's DefaultTrainer with the DSLA data mapper and optimizers (``SOLVER.OPTIMIZER``,
    full-model gradient clipping) and :func:`build_evaluator`. Checkpoints are written atomically,
    the best one is kept with ``TEST.BEST_CHECKPOINT_METRIC``, and multi-process training (GLOO)
    and mixed precision (``SOLVER.AMP.ENABLED``: bfloat16 autocast, :class:`CPUAMPTrainer`) also
    run on the CPU.
    """

    def __init__(self, cfg):
        # Chosen (and CPU AMP refused on a CPU without bfloat16) before the model and the data,
        # which may have to be generated first, are built.
        trainer_cls = trainer_class(cfg.SOLVER.AMP.ENABLED, cfg.MODEL.DEVICE)
        with cpu_ddp_for_default_trainer(cfg.MODEL.DEVICE):
            with amp_trainer_for_default_trainer(trainer_cls):
                super().__init__(cfg)

    def build_hooks(self):
        # Called by DefaultTrainer.__init__ before the hooks (PeriodicCheckpointer) take the
        # checkpointer.
        self.checkpointer = AtomicCheckpointer(
            self.checkpointer.model,
            self.cfg.OUTPUT_DIR,
            allow_pickle=self.cfg.MODEL.WEIGHTS_ALLOW_PICKLE,
            trainer=weakref.proxy(self),
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
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        if cfg.MODEL.CHANNELS_LAST:
            model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation, under autocast with ``TEST.AMP.ENABLED``."""
        with inference_autocast(cfg.TEST.AMP.ENABLED, cfg.MODEL.DEVICE):
            return super().test(cfg, model, evaluators)

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
    register_datasets_from_args(args)
    if args.config_file.endswith(".py"):
        return lazy_main(args)
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        AtomicCheckpointer(
            model, cfg.OUTPUT_DIR, allow_pickle=cfg.MODEL.WEIGHTS_ALLOW_PICKLE
        ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
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
