from .backbone import build_dsla_fpn, build_dsla_resnet_fpn_backbone
from .head import DSLAHead
from .meta_arch import DSLA
from .proposal_generator import DSLA as DSLAProposalGenerator

__all__ = [
    "DSLA",
    "DSLAHead",
    "DSLAProposalGenerator",
    "build_dsla_fpn",
    "build_dsla_resnet_fpn_backbone",
]
