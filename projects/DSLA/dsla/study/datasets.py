"""
The datasets a study knows by name: the synthetic families (``shapes``, ``clutter``: the registered
``{name}_train`` / ``{name}_val``, with the quick-start configs) and the real aerial tree crowns
(``trees``: ``neon_trees_train`` / ``neon_trees_val``, with the real-images configs' ImageNet
MobileNetV2 and recipe; ``make trees`` first).
"""

from typing import Optional, Tuple

from .runs import StudyDataset
from .variants import DSLA_BASE, FCOS_BASE, RETINANET_BASE

__all__ = ["TREES", "study_dataset"]

TREES = StudyDataset(
    "trees",
    "neon_trees_train",
    "neon_trees_val",
    configs=(
        (DSLA_BASE, "DSLA/dsla_mobilenet_v2_trees.yaml"),
        (FCOS_BASE, "FCOS-Baseline/fcos_mobilenet_v2_trees.yaml"),
        (RETINANET_BASE, "RetinaNet-Baseline/retinanet_mobilenet_v2_trees.yaml"),
    ),
)


def study_dataset(name: str, input_size: Optional[Tuple[int, int]] = None) -> StudyDataset:
    """The built-in dataset ``name``: ``trees``, else the family ``{name}_train`` /
    ``{name}_val``."""
    if name == TREES.name:
        return StudyDataset(TREES.name, TREES.train, TREES.test, input_size, TREES.configs)
    return StudyDataset.family(name, input_size)
