"""
DSLA (Dynamic Smooth Label Assignment) on detectron2.

Importing this package registers the ``DSLA`` meta-architecture, the ``DSLA`` proposal generator and the DSLA
backbones in detectron2's registries.
"""
import importlib.util

if importlib.util.find_spec("detectron2") is None:
    raise ImportError(
        "dsla needs detectron2. Build it from source (https://github.com/facebookresearch/detectron2), or run "
        "`make install` / `bash tools/install_detectron2.sh $(which python)` from the dsla repository."
    )

from . import data  # noqa: F401  (registers the shapes_train / shapes_val datasets)
from .config import add_dsla_config, get_dsla_cfg
from .label_assignment import dynamic_smooth_labels, smooth_label_targets
from .losses import quality_focal_loss
from .modeling import DSLA, DSLAHead, DSLAProposalGenerator

__version__ = "0.1.0"

__all__ = [
    "DSLA",
    "DSLAHead",
    "DSLAProposalGenerator",
    "add_dsla_config",
    "get_dsla_cfg",
    "dynamic_smooth_labels",
    "quality_focal_loss",
    "smooth_label_targets",
]
