"""
detectron2's own FCOS, built from a yacs config, as the baseline DSLA is compared with.

detectron2 ships FCOS (``modeling/meta_arch/fcos.py``) for LazyConfig only; this file registers it
in ``META_ARCH_REGISTRY`` as ``"FCOSBaseline"`` with keys under ``cfg.MODEL.FCOS``, so that it
trains through the same ``train_net.py``, data pipeline and backbone
(``build_dsla_resnet_fpn_backbone``, P3-P7) as DSLA. Detector, head, label assignment and losses are
detectron2's, unchanged. Unlike the original FCOS it has no learnable per-level
scales: detectron2 regresses distances in units of the level's stride instead.
"""

from torch import nn

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead

__all__ = ["FCOSBaseline", "add_fcos_baseline_config"]


def add_fcos_baseline_config(cfg):
    """
    Add the config keys of the FCOS baseline under ``cfg.MODEL.FCOS``. Defaults are those of
    detectron2's FCOS (``configs/common/models/fcos.py`` in detectron2's model zoo).
    """
    _C = cfg
    _C.MODEL.FCOS = CN()
    _C.MODEL.FCOS.NUM_CLASSES = 80
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    _C.MODEL.FCOS.NUM_CONVS = 4
    _C.MODEL.FCOS.HEAD_NORM = "GN"
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    # Initial value of the box-regression bias, i.e. of the initial distances in units of the
    # stride. detectron2 decodes relu(raw) distances: if the raw outputs all turn negative early in
    # training (seen with small models trained from scratch), the box branch gets no gradient and
    # dies. 1.0 starts every box one stride wide on each side, out of that trap. 0.0 is detectron2's
    # initialization.
    _C.MODEL.FCOS.BBOX_REG_INIT_BIAS = 0.0
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    _C.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # Inference; the score is sqrt(classification * centerness). Detections per image:
    # TEST.DETECTIONS_PER_IMAGE.
    _C.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    _C.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    _C.MODEL.FCOS.NMS_THRESH_TEST = 0.6


@META_ARCH_REGISTRY.register()
class FCOSBaseline(FCOS):
    """
    detectron2's :class:`FCOS` with a ``from_config`` (keys under ``cfg.MODEL.FCOS``, see
    :func:`add_fcos_baseline_config`) and a configurable initial box-regression bias.
    Losses: ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr``.
    """

    @configurable
    def __init__(self, *, bbox_reg_init_bias: float = 0.0, **kwargs):
        """
        Args:
            bbox_reg_init_bias: initial bias of the head's ``bbox_pred`` conv, i.e. initial
                distances in units of the stride (detectron2: 0).
            kwargs: the arguments of :class:`FCOS`.
        """
        super().__init__(**kwargs)
        nn.init.constant_(self.head.bbox_pred.bias, bbox_reg_init_bias)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        feature_shapes = [backbone_shape[f] for f in cfg.MODEL.FCOS.IN_FEATURES]
        head = FCOSHead(
            input_shape=feature_shapes,
            num_classes=cfg.MODEL.FCOS.NUM_CLASSES,
            conv_dims=[feature_shapes[0].channels] * cfg.MODEL.FCOS.NUM_CONVS,
            norm=cfg.MODEL.FCOS.HEAD_NORM,
            prior_prob=cfg.MODEL.FCOS.PRIOR_PROB,
        )
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": cfg.MODEL.FCOS.IN_FEATURES,
            "num_classes": cfg.MODEL.FCOS.NUM_CLASSES,
            "center_sampling_radius": cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS,
            "focal_loss_alpha": cfg.MODEL.FCOS.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": cfg.MODEL.FCOS.FOCAL_LOSS_GAMMA,
            "test_score_thresh": cfg.MODEL.FCOS.SCORE_THRESH_TEST,
            "test_topk_candidates": cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": cfg.MODEL.FCOS.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "bbox_reg_init_bias": cfg.MODEL.FCOS.BBOX_REG_INIT_BIAS,
        }
