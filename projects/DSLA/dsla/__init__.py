"""
DSLA (Dynamic Smooth Label Assignment) on detectron2.

Importing this package registers the ``DSLA`` meta-architecture, the ``DSLA`` proposal generator and
the DSLA backbones in detectron2's registries.
"""

import importlib.util
import os
import re

if importlib.util.find_spec("detectron2") is None:
    raise ImportError(
        "dsla needs detectron2. Build it from source "
        "(https://github.com/facebookresearch/detectron2), or run "
        "`make install` / `bash tools/install_detectron2.sh $(which python)` from the dsla "
        "repository."
    )

# LazyConfig and @configurable are in detectron2 0.6; Backbone.padding_constraints came to upstream
# in 2022, after the 0.6 release, while source builds still call themselves 0.6.
MIN_DETECTRON2_VERSION = (0, 6)


def _check_detectron2():
    """Stop at import, with the reason, when the installed detectron2 lacks what dsla uses."""
    import detectron2
    from detectron2.modeling import Backbone

    version = tuple(int(part) for part in re.findall(r"\d+", detectron2.__version__)[:2])
    if version < MIN_DETECTRON2_VERSION or not hasattr(Backbone, "padding_constraints"):
        raise ImportError(
            f"dsla needs detectron2 >= {'.'.join(map(str, MIN_DETECTRON2_VERSION))} built from "
            "source in 2022 or "
            f"later (LazyConfig, @configurable, Backbone.padding_constraints); found detectron2 "
            f"{detectron2.__version__} at {os.path.dirname(detectron2.__file__)}. Build a newer "
            "one from source "
            "(https://github.com/facebookresearch/detectron2), or run `make install` from the dsla "
            "repository."
        )


_check_detectron2()

from . import data  # noqa: F401  (registers the synthetic shapes_* and clutter_* datasets)
from .config import add_dsla_config, get_dsla_cfg
from .label_assignment import dynamic_smooth_labels, smooth_label_targets
from .losses import quality_focal_loss
from .modeling import DSLA, DSLADetector, DSLAHead, DSLAProposalGenerator

__version__ = "0.1.0"

__all__ = [
    "DSLA",
    "DSLADetector",
    "DSLAHead",
    "DSLAProposalGenerator",
    "add_dsla_config",
    "get_dsla_cfg",
    "dynamic_smooth_labels",
    "quality_focal_loss",
    "smooth_label_targets",
]
