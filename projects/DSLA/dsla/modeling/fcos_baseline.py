"""
detectron2's own FCOS, built from a yacs config, as the baseline DSLA is compared with.

detectron2 ships FCOS (``modeling/meta_arch/fcos.py``) for LazyConfig only; this file registers it
in ``META_ARCH_REGISTRY`` as ``"FCOSBaseline"`` with keys under ``cfg.MODEL.FCOS``, so that it
trains through the same ``train_net.py``, data pipeline and backbone (P3-P7) as DSLA. Detector,
head, label assignment and losses are detectron2's; two things detectron2 fixes are configurable,
so that both detectors can be compared on the same assignment geometry: the level ranges
(``MODEL.FCOS.REGRESS_RANGES``, detectron2's 4-8 x stride by default) and the point offset
(``MODEL.FCOS.POINT_OFFSET``, detectron2's 0.5 by default). Unlike the original FCOS it has no
learnable per-level scales: detectron2 regresses distances in units of the level's stride instead.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from detectron2.structures import Boxes, Instances, pairwise_point_box_distance

__all__ = ["FCOSBaseline"]


@META_ARCH_REGISTRY.register()
class FCOSBaseline(FCOS):
    """
    detectron2's :class:`FCOS` with a ``from_config`` (keys under ``cfg.MODEL.FCOS``), configurable
    level ranges and point offset, and a configurable initial box-regression bias.
    Losses: ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr``.
    """

    @configurable
    def __init__(
        self,
        *,
        regress_ranges: Optional[Sequence[Tuple[float, float]]] = None,
        point_offset: float = 0.5,
        bbox_reg_init_bias: float = 0.0,
        **kwargs,
    ):
        """
        Args:
            regress_ranges: (lo, hi) of each level of ``head_in_features``: a point of that level
                is positive for a box only when ``lo < max(l, t, r, b) < hi``. None: detectron2's
                own, 4 and 8 times the stride, the first lo 0 and the last hi +inf.
            point_offset: points (detectron2's anchor centers) at ``(i + offset) * stride``;
                detectron2: 0.5.
            bbox_reg_init_bias: initial bias of the head's ``bbox_pred`` conv, i.e. initial
                distances in units of the stride (detectron2: 0).
            kwargs: the arguments of :class:`FCOS`.
        """
        super().__init__(**kwargs)
        nn.init.constant_(self.head.bbox_pred.bias, bbox_reg_init_bias)
        strides = [self.backbone.output_shape()[f].stride for f in self.head_in_features]
        if regress_ranges is None:
            regress_ranges = [
                (0.0 if i == 0 else 4.0 * s, float("inf") if i == len(strides) - 1 else 8.0 * s)
                for i, s in enumerate(strides)
            ]
        if len(regress_ranges) != len(strides):
            raise ValueError(
                f"FCOS needs one regress range per level of {self.head_in_features}; got "
                f"{len(regress_ranges)} ranges"
            )
        self.register_buffer(
            "regress_ranges", torch.tensor(regress_ranges, dtype=torch.float32), False
        )
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[s] for s in strides], aspect_ratios=[1.0], strides=strides, offset=point_offset
        )

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
            "regress_ranges": [tuple(r) for r in cfg.MODEL.FCOS.REGRESS_RANGES],
            "point_offset": cfg.MODEL.FCOS.POINT_OFFSET,
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

    def losses(
        self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness
    ):
        """
        detectron2's FCOS losses, in float32: under autocast (``SOLVER.AMP.ENABLED``) its label
        and box computations mix the low-precision predictions with float32 targets and fail
        ("Index put requires the source and destination dtypes match"), so they run outside it,
        on float32 predictions, as DSLA's losses do.
        """
        device_type = pred_logits[0].device.type
        with torch.autocast(device_type, enabled=False):
            return super().losses(
                anchors,
                [x.float() for x in pred_logits],
                gt_labels,
                [x.float() for x in pred_anchor_deltas],
                gt_boxes,
                [x.float() for x in pred_centerness],
            )

    @torch.no_grad()
    def match_anchors(self, gt_boxes: Boxes, anchors: List[Boxes]) -> Tensor:
        """
        detectron2's FCOS matching (``FCOS._match_anchors``) with this model's level ranges: a
        point matches a box when it is inside it, within ``center_sampling_radius`` strides of its
        center, and ``lo < max(l, t, r, b) < hi`` of its level; among matches, the smallest box.

        Args:
            gt_boxes: the M ground-truth boxes of an image.
            anchors: one Boxes per level, squares of the stride's size around the points.

        Returns:
            Tensor[M, R]: match quality, ``1e8 - area`` of the box where matched, 0 elsewhere.
        """
        num_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors)
        centers = anchors.get_centers()  # [R, 2]
        sizes = anchors.tensor[:, 2] - anchors.tensor[:, 0]  # [R]: the strides
        ranges = self.regress_ranges.to(sizes.device).repeat_interleave(
            torch.tensor(num_per_level, device=sizes.device), dim=0
        )  # [R, 2]

        center_dists = (centers[None, :, :] - gt_boxes.get_centers()[:, None, :]).abs_()
        matched = center_dists.max(dim=2).values < self.center_sampling_radius * sizes[None, :]
        distances = pairwise_point_box_distance(centers, gt_boxes).permute(1, 0, 2)  # [M, R, 4]
        matched &= distances.min(dim=2).values > 0
        max_dist = distances.max(dim=2).values
        matched &= (max_dist > ranges[None, :, 0]) & (max_dist < ranges[None, :, 1])
        return matched.to(torch.float32) * (1e8 - gt_boxes.area()[:, None])

    # detectron2's label_anchors calls the private name.
    _match_anchors = match_anchors

    def dense_predictions(self, predictions: List[List[Tensor]]) -> List[List[Tensor]]:
        """
        The head's outputs ``[logits, box deltas, centerness]`` (each one Tensor[N, C, Hi, Wi] per
        level) as detectron2's FCOS uses them: each one Tensor[N, Hi*Wi, C] per level.
        """
        return self._transpose_dense_predictions(predictions, [self.num_classes, 4, 1])

    def decode_candidates(
        self,
        anchors: List[Boxes],
        scores: List[Tensor],
        deltas: List[Tensor],
        image_size: Tuple[int, int],
    ) -> Instances:
        """
        The pre-NMS candidates of one image, as detectron2's inference selects them (per level the
        top-k scores above the threshold, decoded and clipped).

        Args:
            anchors: one Boxes per level; scores: one Tensor[Hi*Wi, K] per level (the ranking
                score); deltas: one Tensor[Hi*Wi, 4] per level.
        """
        return self._decode_multi_level_predictions(
            anchors, scores, deltas, self.test_score_thresh, self.test_topk_candidates, image_size
        )
