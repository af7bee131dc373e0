from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from .resnet_dcn import build_dsla_resnet_backbone

__all__ = ["build_dsla_fpn", "build_dsla_resnet_fpn_backbone"]


def build_dsla_fpn(cfg, bottom_up: Backbone) -> FPN:
    """
    FPN P3-P7 over a bottom-up network, as DSLA (and FCOS) use it: P3-P5 from
    ``cfg.MODEL.FPN.IN_FEATURES``, P6 = conv(P5 output), P7 = conv(relu(P6)). The authors'
    checkpoints were trained this way (mmdetection's ``add_extra_convs='on_output'``), unlike
    RetinaNet's P6 from C5.
    """
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_dsla_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """
    ResNet/ResNeXt (``cfg.MODEL.RESNETS``, deformable stages included; see
    :func:`build_dsla_resnet_backbone`) with the DSLA FPN (:func:`build_dsla_fpn`).
    """
    return build_dsla_fpn(cfg, build_dsla_resnet_backbone(cfg, input_shape))
