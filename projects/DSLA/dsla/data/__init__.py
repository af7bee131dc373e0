"""
Datasets for DSLA. Importing this package registers the synthetic ``shapes_train`` /
``shapes_val`` and ``clutter_train`` / ``clutter_val`` datasets and the real NEON tree crowns
``neon_trees_train`` / ``neon_trees_val`` (nothing is generated or read until they are loaded).
"""

from .arguments import add_dataset_arguments, register_datasets_from_args
from .clutter import CLUTTER, CLUTTER_CLASSES, register_clutter_datasets, render_clutter_image
from .coco import (
    add_register_coco_argument,
    check_num_classes,
    dataset_classes,
    model_num_classes,
    register_coco_datasets,
)
from .mapper import DSLADatasetMapper
from .neon_trees import NEON_TREES_CLASSES, fetch_neon_trees, load_neon_trees, register_neon_trees
from .shapes import (
    SHAPES_CLASSES,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    register_shapes_datasets,
    render_shapes_image,
)
from .voc import add_register_voc_argument, load_voc_folder, register_voc_datasets

register_shapes_datasets()
register_clutter_datasets()
register_neon_trees()

__all__ = [
    "CLUTTER",
    "CLUTTER_CLASSES",
    "DSLADatasetMapper",
    "NEON_TREES_CLASSES",
    "SHAPES_CLASSES",
    "add_dataset_arguments",
    "add_register_coco_argument",
    "add_register_voc_argument",
    "check_num_classes",
    "dataset_classes",
    "ensure_shapes_dataset",
    "fetch_neon_trees",
    "generate_shapes_dataset",
    "load_neon_trees",
    "load_voc_folder",
    "model_num_classes",
    "register_clutter_datasets",
    "register_coco_datasets",
    "register_datasets_from_args",
    "register_neon_trees",
    "register_shapes_datasets",
    "register_voc_datasets",
    "render_clutter_image",
    "render_shapes_image",
]
