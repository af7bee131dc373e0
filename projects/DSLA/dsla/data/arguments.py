"""The command-line options that register a user's own datasets, shared by every entry point."""

from .coco import add_register_coco_argument, register_coco_datasets
from .voc import add_register_voc_argument, register_voc_datasets

__all__ = ["add_dataset_arguments", "register_datasets_from_args"]


def add_dataset_arguments(parser):
    """``--register-coco NAME JSON IMAGE_ROOT`` and ``--register-voc NAME DIR CLASSES``."""
    add_register_coco_argument(parser)
    add_register_voc_argument(parser)
    return parser


def register_datasets_from_args(args) -> None:
    """Register the datasets that :func:`add_dataset_arguments`' options name."""
    register_coco_datasets(getattr(args, "register_coco", None) or [])
    register_voc_datasets(getattr(args, "register_voc", None) or [])
