from .fpn import build_dsla_fpn, build_dsla_resnet_fpn_backbone

__all__ = ["build_dsla_fpn", "build_dsla_resnet_fpn_backbone"]
