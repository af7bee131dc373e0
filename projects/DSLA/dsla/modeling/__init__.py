from .backbone import build_dsla_fpn, build_dsla_resnet_fpn_backbone
from .fcos_baseline import FCOSBaseline
from .head import DSLAHead
from .meta_arch import DSLADetector
from .proposal_generator import DSLAProposalGenerator

# The name the registries and configs use for the detector; kept for code that imported it.
DSLA = DSLADetector

__all__ = [
    "DSLA",
    "DSLADetector",
    "DSLAHead",
    "DSLAProposalGenerator",
    "FCOSBaseline",
    "build_dsla_fpn",
    "build_dsla_resnet_fpn_backbone",
]
