"""COCO-format datasets given on the command line, and a check of the class count against the
model's."""

import json
import logging
from typing import Iterable, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = [
    "add_register_coco_argument",
    "check_num_classes",
    "dataset_classes",
    "model_num_classes",
    "register_coco_datasets",
]

logger = logging.getLogger(__name__)


def add_register_coco_argument(parser):
    """Add ``--register-coco NAME JSON IMAGE_ROOT`` (repeatable) to an argparse parser; see
    :func:`register_coco_datasets`."""
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format dataset under NAME, usable in DATASETS.TRAIN / DATASETS.TEST "
        "(repeatable)",
    )
    return parser


def register_coco_datasets(specs: Iterable[Sequence[str]]):
    """
    Register COCO-format datasets given as (name, json_file, image_root) triples, as
    ``--register-coco`` does. Registering the same files again under a name is a no-op; another
    dataset under a taken name is an error.
    """
    for name, json_file, image_root in specs:
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if (meta.get("json_file"), meta.get("image_root")) == (json_file, image_root):
                continue
            raise ValueError(
                f"--register-coco {name}: a dataset of that name is already registered "
                f"(json_file={meta.get('json_file')}, image_root={meta.get('image_root')}); choose "
                "another name"
            )
        register_coco_instances(name, {}, json_file, image_root)


def dataset_classes(name: str):
    """
    The class names of a registered dataset: from its metadata; for a COCO-format dataset whose
    metadata is filled only when it is loaded, from the ``categories`` of its JSON file.
    """
    meta = MetadataCatalog.get(name)
    if meta.get("thing_classes") is None and meta.get("json_file"):
        with open(meta.json_file) as f:
            categories = json.load(f).get("categories", [])
        return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    if meta.get("thing_classes") is None:
        DatasetCatalog.get(name)  # loaders such as load_coco_json set the metadata
    if meta.get("thing_classes") is None:
        raise ValueError(f"Dataset '{name}' has no thing_classes in its metadata")
    return list(meta.thing_classes)


def model_num_classes(cfg):
    """(config key, value) of the number of classes of the model that ``cfg`` builds."""
    if cfg.MODEL.META_ARCHITECTURE == "FCOSBaseline":
        return "MODEL.FCOS.NUM_CLASSES", cfg.MODEL.FCOS.NUM_CLASSES
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        return "MODEL.RETINANET.NUM_CLASSES", cfg.MODEL.RETINANET.NUM_CLASSES
    return "MODEL.DSLA.NUM_CLASSES", cfg.MODEL.DSLA.NUM_CLASSES


def check_num_classes(cfg, dataset_names=None):
    """
    Stop before training if the model's class count differs from the training set's: a model with
    too few classes fails on the first unknown label, and one with too many wastes logits and skews
    the evaluation.
    """
    key, num_classes = model_num_classes(cfg)
    for name in dataset_names if dataset_names is not None else cfg.DATASETS.TRAIN:
        classes = dataset_classes(name)
        if len(classes) != num_classes:
            raise ValueError(
                f"{key} is {num_classes} but dataset '{name}' has {len(classes)} categories "
                f"({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''}). "
                f"Set {key} {len(classes)} on the command line or in the config."
            )
    logger.info(f"{key} = {num_classes} matches the training data")
