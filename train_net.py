#!/usr/bin/env python
"""
Train and evaluate DSLA with detectron2's default training loop.

    python train_net.py --config-file configs/DSLA/dsla_R_50_FPN_1x.yaml --num-gpus 8
    python train_net.py --config-file configs/DSLA/dsla_R_50_FPN_1x.yaml --eval-only MODEL.WEIGHTS model.pth

Arguments are detectron2's (``--resume``, ``--eval-only``, ``--num-gpus``, ``--num-machines``, ``--machine-rank``,
``--dist-url``, trailing ``KEY VALUE`` config overrides) plus ``--register-coco NAME JSON IMAGE_ROOT``.
"""
import importlib.util
import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator

from dsla import add_dsla_config

logger = logging.getLogger("dsla")


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer, evaluating with COCOEvaluator."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # Without detectron2's compiled ops, its fast COCOeval is unavailable; use pycocotools' quietly.
        has_compiled_ops = importlib.util.find_spec("detectron2._C") is not None
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=has_compiled_ops)


def register_datasets(args):
    for name, json_file, image_root in args.register_coco:
        register_coco_instances(name, {}, json_file, image_root)


def setup(args):
    cfg = get_cfg()
    add_dsla_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    register_datasets(args)
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format dataset under NAME for use in DATASETS.TRAIN / DATASETS.TEST (repeatable)",
    )
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
