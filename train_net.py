#!/usr/bin/env python
"""
Train and evaluate DSLA with detectron2's default training loop.

    python train_net.py --config-file configs/DSLA/dsla_R_50_FPN_1x.yaml --num-gpus 8
    python train_net.py --config-file configs/DSLA/dsla_R_50_FPN_1x.yaml --eval-only MODEL.WEIGHTS model.pth

Arguments are detectron2's (``--resume``, ``--eval-only``, ``--num-gpus``, ``--num-machines``, ``--machine-rank``,
``--dist-url``, trailing ``KEY VALUE`` config overrides) plus ``--register-coco NAME JSON IMAGE_ROOT``.
"""
import contextlib
import functools
import importlib.util
import os
import weakref

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, defaults, launch
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

from dsla import get_dsla_cfg
from dsla.checkpoint import AtomicCheckpointer
from dsla.data import DSLADatasetMapper, add_register_coco_argument, check_num_classes, register_coco_datasets
from dsla.evaluation import ScoreIoUEvaluator
from dsla.solver import build_optimizer


@contextlib.contextmanager
def _ddp_without_device_ids_on_cpu(cfg):
    """
    detectron2 wraps the model in DDP with ``device_ids=[local rank]``, which PyTorch rejects for a CPU model;
    without device ids DDP works on the CPU with GLOO (``--num-gpus N MODEL.DEVICE cpu``).
    """
    if cfg.MODEL.DEVICE != "cpu":
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
    detectron2's DefaultTrainer with the DSLA optimizers (``SOLVER.OPTIMIZER``, full-model gradient clipping),
    evaluating with COCOEvaluator (and ScoreIoUEvaluator if ``TEST.SCORE_IOU_EVAL``). Checkpoints are written
    atomically, and multi-process training also runs on the CPU (``--num-gpus N MODEL.DEVICE cpu``, GLOO).
    """

    def __init__(self, cfg):
        with _ddp_without_device_ids_on_cpu(cfg):
            super().__init__(cfg)

    def build_hooks(self):
        # Called by DefaultTrainer.__init__ before the hooks (PeriodicCheckpointer) take the checkpointer.
        self.checkpointer = AtomicCheckpointer(self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        return super().build_hooks()

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=DSLADatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=DSLADatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # Without detectron2's compiled ops, its fast COCOeval is unavailable; use pycocotools' quietly.
        has_compiled_ops = importlib.util.find_spec("detectron2._C") is not None
        coco = COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=has_compiled_ops)
        if not cfg.TEST.SCORE_IOU_EVAL:
            return coco
        return DatasetEvaluators([coco, ScoreIoUEvaluator(dataset_name, output_folder, topk=cfg.TEST.SCORE_IOU_TOPK)])


def setup(args):
    cfg = get_dsla_cfg(args.config_file, args.opts, freeze=True)
    default_setup(cfg, args)
    return cfg


def main(args):
    register_coco_datasets(args.register_coco)
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    check_num_classes(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    add_register_coco_argument(parser)
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
