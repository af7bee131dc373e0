"""
Datasets for DSLA. Importing this package registers the synthetic ``shapes_train`` and ``shapes_val`` datasets
(nothing is generated until they are loaded).
"""
from .coco import check_num_classes, dataset_classes, register_coco_datasets
from .mapper import DSLADatasetMapper
from .shapes import (
    SHAPES_CLASSES,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    register_shapes_datasets,
    render_shapes_image,
)

register_shapes_datasets()

__all__ = [
    "DSLADatasetMapper",
    "check_num_classes",
    "dataset_classes",
    "register_coco_datasets",
    "SHAPES_CLASSES",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
    "register_shapes_datasets",
    "render_shapes_image",
]
