from .fpn import build_dsla_fpn, build_dsla_resnet_fpn_backbone
from .mobilenet import (
    MobileNetV2,
    build_dsla_mobilenet_v2_backbone,
    build_dsla_mobilenet_v2_fpn_backbone,
)
from .resnet_dcn import FrozenStatsBatchNorm2d, build_dsla_resnet_backbone, make_deformable
from .swin import SwinTransformer, build_dsla_swin_backbone, build_dsla_swin_fpn_backbone
from .timm_backbone import TimmBackbone, build_dsla_timm_backbone, build_dsla_timm_fpn_backbone
from .tiny import TinyConvNet, build_dsla_tiny_fpn_backbone

__all__ = [
    "FrozenStatsBatchNorm2d",
    "MobileNetV2",
    "SwinTransformer",
    "TimmBackbone",
    "TinyConvNet",
    "build_dsla_fpn",
    "build_dsla_mobilenet_v2_backbone",
    "build_dsla_mobilenet_v2_fpn_backbone",
    "build_dsla_resnet_backbone",
    "build_dsla_resnet_fpn_backbone",
    "build_dsla_swin_backbone",
    "build_dsla_swin_fpn_backbone",
    "build_dsla_timm_backbone",
    "build_dsla_timm_fpn_backbone",
    "build_dsla_tiny_fpn_backbone",
    "make_deformable",
]
