"""
ResNet and ResNeXt with deformable stages, through ``torchvision.ops.deform_conv2d``.

detectron2's own ``DeformBottleneckBlock`` needs its compiled ops (``detectron2._C``); the block here is
detectron2's :class:`BottleneckBlock` whose 3x3 conv is a :class:`dsla.layers.DeformConv2d`, so DCN configs run
with either build of detectron2. Everything else (stem, stages, freezing, output shapes) is detectron2's
:class:`ResNet`, configured by the usual ``MODEL.RESNETS`` keys.
"""
import fvcore.nn.weight_init as weight_init
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

from ...layers import DeformConv2d

__all__ = ["DeformBottleneckBlock", "FrozenStatsBatchNorm2d", "build_dsla_resnet_backbone"]


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """
    BatchNorm2d that always normalizes with its running statistics and never updates them, while its affine
    weight and bias train: mmdetection's ``norm_eval=True`` with ``requires_grad=True``, the setting of the
    authors' pytorch-style R-101 and X-101 models. ``MODEL.RESNETS.NORM: "FrozenStatsBN"``.

    Stages frozen by ``MODEL.BACKBONE.FREEZE_AT`` become detectron2's ``FrozenBatchNorm2d`` as usual.
    """

    def forward(self, x):
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


# Norm names that detectron2's `get_norm` does not know.
_NORMS = {"FrozenStatsBN": FrozenStatsBatchNorm2d}


class DeformBottleneckBlock(BottleneckBlock):
    """
    detectron2's :class:`BottleneckBlock` with a deformable 3x3 conv (DCNv1, or DCNv2 with
    ``deform_modulated``) that predicts its offsets with its own zero-initialized conv, ``conv2.conv_offset``,
    as mmcv's ``DeformConv2dPack`` in the authors' backbones. Grouped convs (ResNeXt) are supported.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        bottleneck_channels,
        stride=1,
        num_groups=1,
        norm="BN",
        stride_in_1x1=False,
        dilation=1,
        deform_modulated=False,
        deform_num_groups=1,
    ):
        """
        Args:
            deform_modulated: use DCNv2 (a sigmoid mask per tap) instead of DCNv1.
            deform_num_groups: offset groups of the deformable conv.
            others: see :class:`BottleneckBlock`.
        """
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        self.conv2 = DeformConv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=1 if stride_in_1x1 else stride,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            deformable_groups=deform_num_groups,
            bias=False,
            modulated=deform_modulated,
            norm=norm,
        )
        # c2_msra_fill leaves the offset conv alone: it stays zero, so the block starts as a plain bottleneck.
        weight_init.c2_msra_fill(self.conv2)


@BACKBONE_REGISTRY.register()
def build_dsla_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    detectron2's ResNet/ResNeXt from ``cfg.MODEL.RESNETS``, as ``build_resnet_backbone`` builds it, except that
    the stages in ``DEFORM_ON_PER_STAGE`` use :class:`DeformBottleneckBlock` and ``NORM`` may also be
    ``"FrozenStatsBN"`` (:class:`FrozenStatsBatchNorm2d`).
    """
    res = cfg.MODEL.RESNETS
    norm = _NORMS.get(res.NORM, res.NORM)
    depth = res.DEPTH
    num_blocks_per_stage = {
        18: [2, 2, 2, 2],
        34: [3, 4, 6, 3],
        50: [3, 4, 6, 3],
        101: [3, 4, 23, 3],
        152: [3, 8, 36, 3],
    }[depth]
    basic = depth in (18, 34)
    if basic and (any(res.DEFORM_ON_PER_STAGE) or res.NUM_GROUPS != 1 or res.RES5_DILATION != 1):
        raise ValueError("R-18/R-34 support neither deformable stages, groups nor res5 dilation")
    if basic and res.RES2_OUT_CHANNELS != 64:
        raise ValueError("R-18/R-34 need MODEL.RESNETS.RES2_OUT_CHANNELS = 64")
    if res.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res.RES5_DILATION}")

    stem = BasicStem(in_channels=input_shape.channels, out_channels=res.STEM_OUT_CHANNELS, norm=norm)
    in_channels = res.STEM_OUT_CHANNELS
    out_channels = res.RES2_OUT_CHANNELS
    bottleneck_channels = res.NUM_GROUPS * res.WIDTH_PER_GROUP
    stages = []
    for idx, stage_idx in enumerate(range(2, 6)):
        dilation = res.RES5_DILATION if stage_idx == 5 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        stage_kwargs = {
            "num_blocks": num_blocks_per_stage[idx],
            "stride_per_block": [first_stride] + [1] * (num_blocks_per_stage[idx] - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
        }
        if basic:
            stage_kwargs["block_class"] = BasicBlock
        else:
            stage_kwargs.update(
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=res.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=res.NUM_GROUPS,
            )
            if res.DEFORM_ON_PER_STAGE[idx]:
                stage_kwargs.update(
                    block_class=DeformBottleneckBlock,
                    deform_modulated=res.DEFORM_MODULATED,
                    deform_num_groups=res.DEFORM_NUM_GROUPS,
                )
            else:
                stage_kwargs["block_class"] = BottleneckBlock
        stages.append(ResNet.make_stage(**stage_kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=res.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
