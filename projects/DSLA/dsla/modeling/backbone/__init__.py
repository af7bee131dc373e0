from .fpn import build_dsla_fpn, build_dsla_resnet_fpn_backbone
from .resnet_dcn import FrozenStatsBatchNorm2d, build_dsla_resnet_backbone, make_deformable
from .swin import (
    SwinTransformer,
    add_swin_config,
    build_dsla_swin_backbone,
    build_dsla_swin_fpn_backbone,
)
from .tiny import TinyConvNet, add_tiny_convnet_config, build_dsla_tiny_fpn_backbone

__all__ = [
    "FrozenStatsBatchNorm2d",
    "SwinTransformer",
    "TinyConvNet",
    "add_swin_config",
    "add_tiny_convnet_config",
    "build_dsla_fpn",
    "build_dsla_resnet_backbone",
    "make_deformable",
    "build_dsla_resnet_fpn_backbone",
    "build_dsla_swin_backbone",
    "build_dsla_swin_fpn_backbone",
    "build_dsla_tiny_fpn_backbone",
]
