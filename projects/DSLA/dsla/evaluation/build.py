"""The evaluator of a dataset, as detectron2's ``tools/train_net.py`` chooses it."""

import importlib.util
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
)

from .score_iou import ScoreIoUEvaluator

__all__ = ["build_evaluator"]


def build_evaluator(cfg, dataset_name, output_folder=None):
    """
    The evaluator of a dataset's ``evaluator_type`` (its metadata), as detectron2's
    ``tools/train_net.py`` picks it: "coco", "lvis" or "pascal_voc"; with ``TEST.SCORE_IOU_EVAL``
    also a :class:`ScoreIoUEvaluator`.
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
