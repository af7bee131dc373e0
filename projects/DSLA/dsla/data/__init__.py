"""
Datasets for DSLA. Importing this package registers the synthetic ``shapes_train`` / ``shapes_val``
and ``clutter_train`` / ``clutter_val`` datasets (nothing is generated until they are loaded).
"""

from .clutter import CLUTTER, CLUTTER_CLASSES, register_clutter_datasets, render_clutter_image
from .coco import (
    add_register_coco_argument,
    check_num_classes,
    dataset_classes,
    model_num_classes,
    register_coco_datasets,
)
from .mapper import DSLADatasetMapper
from .shapes import (
    SHAPES_CLASSES,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    register_shapes_datasets,
    render_shapes_image,
)

register_shapes_datasets()
register_clutter_datasets()

__all__ = [
    "DSLADatasetMapper",
    "add_register_coco_argument",
    "model_num_classes",
    "check_num_classes",
    "dataset_classes",
    "register_coco_datasets",
    "CLUTTER",
    "CLUTTER_CLASSES",
    "register_clutter_datasets",
    "render_clutter_image",
    "SHAPES_CLASSES",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
    "register_shapes_datasets",
    "render_shapes_image",
]
