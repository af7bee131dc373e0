"""
ResNet and ResNeXt with deformable stages, through ``torchvision.ops.deform_conv2d``.

detectron2's own ``DeformBottleneckBlock`` needs its compiled ops (``detectron2._C``). Here
detectron2 builds its plain :class:`ResNet` from the usual ``MODEL.RESNETS`` keys, and the 3x3 convs
of the deformable stages are then replaced by :class:`dsla.layers.DeformConv2d`, so DCN configs run
with either build of detectron2.
"""

from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BottleneckBlock, ResNet, build_resnet_backbone

from ...layers import DeformConv2d

__all__ = ["FrozenStatsBatchNorm2d", "build_dsla_resnet_backbone", "make_deformable"]


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """
    BatchNorm2d that always normalizes with its running statistics and never updates them, while its
    affine weight and bias train: mmdetection's ``norm_eval=True`` with ``requires_grad=True``, the
    setting of the authors' pytorch-style R-101 and X-101 models. ``MODEL.RESNETS.NORM:
    "FrozenStatsBN"``.

    Stages frozen by ``MODEL.BACKBONE.FREEZE_AT`` become detectron2's ``FrozenBatchNorm2d`` as
    usual.
    """

    def forward(self, x):
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=False,
            eps=self.eps,
        )


def make_deformable(
    block: BottleneckBlock, modulated: bool = False, deformable_groups: int = 1
) -> BottleneckBlock:
    """
    Turn the 3x3 conv of detectron2's :class:`BottleneckBlock` into a
    :class:`dsla.layers.DeformConv2d` (DCNv1, or DCNv2 with ``modulated``) with the same weights and
    norm, in place. Its offsets come from its own zero-initialized conv, ``conv2.conv_offset``, as
    mmcv's ``DeformConv2dPack`` in the authors' backbones: until the offsets train, a DCNv1 block
    computes what it computed before (DCNv2 scales the conv by sigmoid(0) = 0.5).
    """
    if not isinstance(block, BottleneckBlock):
        raise ValueError(
            "Deformable stages need bottleneck blocks (ResNet-50 and deeper), got "
            f"{type(block).__name__}"
        )
    conv = block.conv2
    deform = DeformConv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size[0],
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        deformable_groups=deformable_groups,
        bias=conv.bias is not None,
        modulated=modulated,
    )
    deform.weight.data.copy_(conv.weight.data)
    if conv.bias is not None:
        deform.bias.data.copy_(conv.bias.data)
    deform.norm = conv.norm
    block.conv2 = deform
    return block


def _use_frozen_stats_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a :class:`FrozenStatsBatchNorm2d` with its
    state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            frozen_stats = FrozenStatsBatchNorm2d(child.num_features, eps=child.eps)
            frozen_stats.load_state_dict(child.state_dict())
            setattr(module, name, frozen_stats)
        else:
            _use_frozen_stats_batchnorm(child)
    return module


@BACKBONE_REGISTRY.register()
def build_dsla_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    detectron2's ResNet/ResNeXt from ``cfg.MODEL.RESNETS`` (``build_resnet_backbone``), except that
    the 3x3 convs of the stages in ``DEFORM_ON_PER_STAGE`` are deformable through torchvision
    (:func:`make_deformable`), and ``NORM`` may also be ``"FrozenStatsBN"``
    (:class:`FrozenStatsBatchNorm2d`).
    """
    res = cfg.MODEL.RESNETS
    plain = cfg.clone()
    plain.defrost()
    # detectron2 builds the plain network; deformable convs, the norm and freezing are applied
    # afterwards.
    plain.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False] * 4
    plain.MODEL.BACKBONE.FREEZE_AT = 0
    if res.NORM == "FrozenStatsBN":
        plain.MODEL.RESNETS.NORM = "BN"
    model = build_resnet_backbone(plain, input_shape)
    for stage_name, deform in zip(("res2", "res3", "res4", "res5"), res.DEFORM_ON_PER_STAGE):
        if deform and hasattr(model, stage_name):
            for block in getattr(model, stage_name):
                make_deformable(block, res.DEFORM_MODULATED, res.DEFORM_NUM_GROUPS)
    if res.NORM == "FrozenStatsBN":
        _use_frozen_stats_batchnorm(model)
    return model.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
