from .backbone import build_dsla_fpn, build_dsla_resnet_fpn_backbone
from .fcos_baseline import FCOSBaseline
from .head import DSLAHead
from .meta_arch import DSLA
from .proposal_generator import DSLA as DSLAProposalGenerator

__all__ = [
    "DSLA",
    "DSLAHead",
    "DSLAProposalGenerator",
    "FCOSBaseline",
    "build_dsla_fpn",
    "build_dsla_resnet_fpn_backbone",
]
