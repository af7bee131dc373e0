from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, cat
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage

from ..label_assignment import dynamic_smooth_labels, level_points, smooth_label_targets
from ..losses import all_reduce_mean, box_regression_loss, paired_iou, quality_focal_loss
from .head import DSLAHead

__all__ = ["DSLAProposalGenerator", "check_finite_predictions"]


class DSLAProposalGenerator(nn.Module):
    """
    The DSLA head as a proposal generator (``MODEL.PROPOSAL_GENERATOR.NAME: "DSLA"``): features in,
    detections (or proposals) and losses out. Its caller tells it its role: the ``DSLA``
    meta-architecture (:class:`DSLADetector`) builds it with ``two_stage=False`` and takes its
    detections as the model's output; built by name from the registry, as a two-stage detector such
    as ``GeneralizedRCNN`` builds its first stage, it gives ``proposal_boxes``.
    """

    # A constant to TorchScript, which then compiles the outputs of one role only.
    two_stage: torch.jit.Final[bool]

    @configurable
    def __init__(
        self,
        *,
        two_stage: bool,
        head: nn.Module,
        in_features: List[str],
        strides: List[int],
        regress_ranges: List[Tuple[float, float]],
        num_classes: int,
        interval_relaxation: float = 0.2,
        core_zone: bool = True,
        iou_coupling: bool = True,
        iou_only: bool = False,
        center_sampling_radius: float = 0.0,
        point_offset: float = 0.0,
        qfl_beta: float = 2.0,
        cls_loss_weight: float = 1.0,
        box_loss_type: str = "iou",
        box_loss_weight: float = 1.0,
        box_loss_weighting: str = "y_s",
        score_thresh_test: float = 0.05,
        topk_candidates_test: int = 1000,
        nms_thresh_test: float = 0.6,
        max_detections_per_image: int = 100,
    ):
        """
        Args:
            two_stage: act as the first stage of a two-stage detector: return the detections, also
                in training, as Instances with ``proposal_boxes`` and ``objectness_logits`` (score
                logits). False: the detector head of :class:`DSLADetector`, whose detections are the
                model's output (``pred_boxes``, ``scores``, ``pred_classes``).
            head: maps a list of features to per-level logits and distances in pixels (see
                :class:`DSLAHead`).
            in_features: names of the input features, one per level.
            strides, regress_ranges: stride and (lo, hi) range of each level.
            num_classes: number of foreground classes.
            interval_relaxation, core_zone, center_sampling_radius: see
                :func:`smooth_label_targets`.
            iou_coupling, iou_only: see :func:`dynamic_smooth_labels`.
            point_offset: points are at ``(i + point_offset) * stride``.
            qfl_beta: Quality Focal Loss exponent.
            cls_loss_weight, box_loss_weight: loss weights.
            box_loss_type: "iou" or "giou".
            box_loss_weighting: "y_s" (the paper's): each positive's box loss weighs its static
                label ``y_s`` and the sum is divided by ``sum(y_s)``; "uniform": each positive
                weighs 1 and the sum is divided by their number, as in detectron2's FCOS (an
                ablation).
            score_thresh_test, topk_candidates_test, nms_thresh_test: inference filtering.
            max_detections_per_image: detections kept per image after NMS.
        """
        super().__init__()
        if not (len(in_features) == len(strides) == len(regress_ranges)):
            raise ValueError(
                "DSLA needs one stride and one regress range per input feature; got "
                f"{len(in_features)} features "
                f"{in_features}, {len(strides)} strides and {len(regress_ranges)} ranges"
            )
        if box_loss_type not in ("iou", "giou"):
            raise ValueError(f"Unknown box loss type '{box_loss_type}'; expected 'iou' or 'giou'")
        if box_loss_weighting not in ("y_s", "uniform"):
            raise ValueError(
                f"Unknown MODEL.DSLA.BOX_LOSS_WEIGHTING '{box_loss_weighting}'; expected 'y_s' "
                "or 'uniform'"
            )
        self.head = head
        self.in_features = list(in_features)
        self.strides = list(strides)
        self.register_buffer(
            "regress_ranges", torch.tensor(regress_ranges, dtype=torch.float32), False
        )
        self.num_classes = num_classes
        self.interval_relaxation = interval_relaxation
        self.core_zone = core_zone
        self.iou_coupling = iou_coupling
        self.iou_only = iou_only
        self.center_sampling_radius = center_sampling_radius
        self.point_offset = point_offset
        self.qfl_beta = qfl_beta
        self.cls_loss_weight = cls_loss_weight
        self.box_loss_type = box_loss_type
        self.box_loss_weight = box_loss_weight
        self.box_loss_weighting = box_loss_weighting
        self.score_thresh_test = score_thresh_test
        self.topk_candidates_test = topk_candidates_test
        self.nms_thresh_test = nms_thresh_test
        self.max_detections_per_image = max_detections_per_image
        self.two_stage = two_stage

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec], two_stage: bool = True):
        in_features = cfg.MODEL.DSLA.IN_FEATURES
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.DSLA.IN_FEATURES {in_features} names features the backbone does not "
                f"output: {missing}; "
                f"it outputs {sorted(input_shape)}"
            )
        shapes = [input_shape[f] for f in in_features]
        strides = list(cfg.MODEL.DSLA.FPN_STRIDES)
        backbone_strides = [s.stride for s in shapes]
        if strides != backbone_strides:
            raise ValueError(
                f"MODEL.DSLA.FPN_STRIDES {strides} disagree with the backbone's strides "
                f"{backbone_strides} "
                f"for {in_features}"
            )
        return {
            "head": DSLAHead(cfg, shapes),
            "in_features": in_features,
            "strides": strides,
            "regress_ranges": [tuple(r) for r in cfg.MODEL.DSLA.REGRESS_RANGES],
            "num_classes": cfg.MODEL.DSLA.NUM_CLASSES,
            "interval_relaxation": cfg.MODEL.DSLA.INTERVAL_RELAXATION,
            "core_zone": cfg.MODEL.DSLA.CORE_ZONE,
            "iou_coupling": cfg.MODEL.DSLA.IOU_COUPLING,
            "iou_only": cfg.MODEL.DSLA.IOU_ONLY,
            "center_sampling_radius": cfg.MODEL.DSLA.CENTER_SAMPLING_RADIUS,
            "point_offset": cfg.MODEL.DSLA.POINT_OFFSET,
            "qfl_beta": cfg.MODEL.DSLA.QFL_BETA,
            "cls_loss_weight": cfg.MODEL.DSLA.CLS_LOSS_WEIGHT,
            "box_loss_type": cfg.MODEL.DSLA.BOX_LOSS_TYPE,
            "box_loss_weight": cfg.MODEL.DSLA.BOX_LOSS_WEIGHT,
            "box_loss_weighting": cfg.MODEL.DSLA.BOX_LOSS_WEIGHTING,
            "score_thresh_test": cfg.MODEL.DSLA.SCORE_THRESH_TEST,
            "topk_candidates_test": cfg.MODEL.DSLA.TOPK_CANDIDATES_TEST,
            "nms_thresh_test": cfg.MODEL.DSLA.NMS_THRESH_TEST,
            # As the first stage of a two-stage detector, the number of proposals follows the RPN's
            # keys.
            "max_detections_per_image": (
                cfg.MODEL.RPN.POST_NMS_TOPK_TEST if two_stage else cfg.TEST.DETECTIONS_PER_IMAGE
            ),
            "two_stage": two_stage,
        }

    def __prepare_scriptable__(self):
        # Called by torch.jit.script: without detectron2's patch, the compiler would fail deep in
        # Instances.__init__.
        if not getattr(Instances, "__torch_script_class__", False):
            fields = (
                "proposal_boxes: Boxes, objectness_logits: Tensor"
                if self.two_stage
                else "pred_boxes: Boxes, scores: Tensor, pred_classes: Tensor"
            )
            raise RuntimeError(
                "DSLAProposalGenerator returns detectron2's Instances, which torch.jit.script "
                "compiles only through detectron2.export.scripting_with_instances(model, fields), "
                f"with the model in eval mode and fields {{{fields}}} (plus those of the rest of "
                "the model). Or trace the model: tools/export_model.py (docs/deployment.md)."
            )
        return self

    def forward(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        gt_instances: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, Tensor]]:
        """
        Args:
            images: the padded input batch.
            features: backbone features by name.
            gt_instances: per image, ``gt_boxes`` and ``gt_classes`` (training only). With
                ``two_stage``, ``gt_classes`` may be missing, as for detectron2's RPN: every box is
                then of class 0.

        Returns:
            results: per image, Instances with ``pred_boxes``, ``scores``, ``pred_classes`` in the
                coordinates of the network input (with ``two_stage``: ``proposal_boxes`` and
                ``objectness_logits``). Empty in training unless ``two_stage``.
            losses: ``loss_dsla_cls`` and ``loss_dsla_box`` in training; empty otherwise.
        """
        points, logits, distances = self.predict([features[f] for f in self.in_features])
        losses: Dict[str, Tensor] = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("DSLA needs gt_instances in training")
            # Named before any box check (fvcore's GIoU asserts on NaN boxes), with detectron2's
            # exception and the iteration, as its trainer reports a non-finite loss.
            check_finite_predictions(logits, distances)
            # Labels and losses are float32 math (IoUs, logs, normalizers) also under autocast,
            # whose lower-precision ops (matmul-like) they must not meet.
            with torch.autocast(points[0].device.type, enabled=False):
                static, classes, box_targets = self.label_points(points, gt_instances)
                losses = self.losses(logits, distances, static, classes, box_targets)
            if not self.two_stage:
                no_results: List[Instances] = []
                return no_results, losses
        with torch.no_grad():
            results = self.inference(points, logits, distances, images.image_sizes)
        return results, losses

    def make_points(
        self, sizes: List[Tuple[int, int]], device: Optional[torch.device] = None
    ) -> List[Tensor]:
        """
        The points of each level for feature maps of ``sizes`` ((Hi, Wi) per level).

        Returns:
            one Tensor[Hi*Wi, 2] per level (see :func:`level_points`).
        """
        return [
            level_points(h, w, s, self.point_offset, device=device)
            for (h, w), s in zip(sizes, self.strides)
        ]

    def predict(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Run the head on the features of ``in_features``.

        Returns:
            points: one Tensor[Hi*Wi, 2] per level (see :meth:`make_points`).
            logits: one Tensor[N, Hi*Wi, K] per level.
            distances: one Tensor[N, Hi*Wi, 4] per level, in pixels.
        """
        logits, distances = self.head(features)
        points = self.make_points(
            [(f.shape[-2], f.shape[-1]) for f in features], features[0].device
        )
        # (N, C, H, W) -> (N, H*W, C), the order of `level_points`.
        logits = [x.flatten(2).transpose(1, 2) for x in logits]
        distances = [x.flatten(2).transpose(1, 2) for x in distances]
        return points, logits, distances

    def flatten_points(self, points: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """
        The points of all levels in one tensor, with the stride and regress range of each.

        Args:
            points: one Tensor[Hi*Wi, 2] per level.

        Returns:
            points Tensor[R, 2], strides Tensor[R], regress_ranges Tensor[R, 2].
        """
        strides = cat(
            [torch.full((len(p),), float(s), device=p.device) for p, s in zip(points, self.strides)]
        )
        ranges = cat(
            [self.regress_ranges[i].to(p.device).expand(len(p), 2) for i, p in enumerate(points)]
        )
        return cat(points), strides, ranges

    @torch.jit.unused
    @torch.no_grad()
    def label_points(
        self, points: List[Tensor], gt_instances: List[Instances]
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Static smooth labels of every point of every image (:func:`smooth_label_targets`).

        Args:
            points: one Tensor[Hi*Wi, 2] per level.
            gt_instances: per image, ``gt_boxes`` and ``gt_classes``; with ``two_stage``,
                ``gt_boxes`` alone: a class-agnostic first stage, as detectron2's RPN, where every
                box is of class 0.

        Returns:
            static: Tensor[N, R]: ``y_s``.
            classes: long Tensor[N, R]: class, ``num_classes`` for negatives.
            box_targets: Tensor[N, R, 4]: (l, t, r, b) to the assigned box.
        """
        points, strides, ranges = self.flatten_points(points)
        labels = [
            smooth_label_targets(
                points,
                strides,
                ranges,
                inst.gt_boxes.tensor,
                self._gt_classes(inst),
                self.num_classes,
                relaxation=self.interval_relaxation,
                core_zone=self.core_zone,
                center_sampling_radius=self.center_sampling_radius,
            )
            for inst in gt_instances
        ]
        static, classes, box_targets = (torch.stack(x) for x in zip(*labels))
        return static, classes, box_targets

    def _gt_classes(self, instances: Instances) -> Tensor:
        if instances.has("gt_classes"):
            return instances.gt_classes
        if not self.two_stage:
            raise ValueError(
                "DSLA as a detector (two_stage=False) needs 'gt_classes' in its ground truth; got "
                f"Instances with fields {sorted(instances.get_fields())}. Only as the first stage "
                "of a two-stage detector (two_stage=True) does it learn from boxes alone."
            )
        return torch.zeros(len(instances), dtype=torch.long, device=instances.gt_boxes.device)

    @torch.jit.unused
    def box_loss_weights(self, static_pos: Tensor) -> Tensor:
        """The weight of each positive's box loss, given its static label ``y_s`` (Tensor[P]):
        ``y_s`` itself, or 1 with ``box_loss_weighting="uniform"``."""
        if self.box_loss_weighting == "uniform":
            return torch.ones_like(static_pos)
        return static_pos

    @torch.jit.unused
    def losses(
        self,
        logits: List[Tensor],
        distances: List[Tensor],
        static: Tensor,
        classes: Tensor,
        box_targets: Tensor,
    ) -> Dict[str, Tensor]:
        """
        DSLA losses (paper, section 3.3; ``docs/configuration.md``): Quality Focal Loss against the
        dynamic label ``y_d`` and the IoU/GIoU loss weighted by ``y_s`` (or uniformly, see
        ``box_loss_weighting``), each divided by its sum of weights averaged over the workers.

        Args:
            logits: one Tensor[N, Hi*Wi, K] per level.
            distances: one Tensor[N, Hi*Wi, 4] per level, in pixels.
            static, classes, box_targets: the labels of :meth:`label_points`: Tensor[N, R],
                long Tensor[N, R], Tensor[N, R, 4].

        Returns:
            dict with ``loss_dsla_cls`` and ``loss_dsla_box``.
        """
        logits = cat(logits, dim=1).float()  # [N, R, K]
        distances = cat(distances, dim=1).float()  # [N, R, 4]

        pos = static > 0
        pred_pos, target_pos, static_pos = distances[pos], box_targets[pos], static[pos]
        # The IoU is a target, not a path for the classification loss into the box branch.
        ious = paired_iou(pred_pos.detach(), target_pos)
        dynamic = dynamic_smooth_labels(static_pos, ious, self.iou_coupling, self.iou_only)

        box_weights = self.box_loss_weights(static_pos)
        # Normalizers: sum(y_d) and the sum of the box weights, averaged over the workers in one
        # all-reduce.
        cls_normalizer, box_normalizer = all_reduce_mean(
            torch.stack([dynamic.sum(), box_weights.sum()])
        ).clamp(min=1.0)

        cls_targets = torch.zeros_like(logits)
        img_idx, point_idx = pos.nonzero(as_tuple=True)
        cls_targets[img_idx, point_idx, classes[img_idx, point_idx]] = dynamic
        loss_cls = quality_focal_loss(logits, cls_targets, self.qfl_beta).sum() / cls_normalizer

        box_loss = box_regression_loss(pred_pos, target_pos, self.box_loss_type)
        # The zero term keeps the box branch in the graph when no point is positive: DDP expects a
        # gradient for every parameter.
        loss_box = (box_loss * box_weights).sum() / box_normalizer + 0.0 * distances.sum()

        storage = get_event_storage()
        storage.put_scalar("dsla/num_pos_per_image", pos.sum().item() / max(len(static), 1))
        if len(static_pos) > 0:
            storage.put_scalar("dsla/mean_y_s", static_pos.mean().item())
            storage.put_scalar("dsla/mean_y_d", dynamic.mean().item())
        return {
            "loss_dsla_cls": loss_cls * self.cls_loss_weight,
            "loss_dsla_box": loss_box * self.box_loss_weight,
        }

    def inference(
        self,
        points: List[Tensor],
        logits: List[Tensor],
        distances: List[Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """
        Detections of each image, as the authors' inference selects them: the candidates of
        :meth:`image_candidates`, class-wise NMS over all levels, the best
        ``max_detections_per_image`` kept.

        Nothing here branches in Python on a data-dependent size, so a traced or exported model
        works at every input size.
        """
        results: List[Instances] = []
        for img_idx, image_size in enumerate(image_sizes):
            boxes, scores, classes = self.image_candidates(
                points, [x[img_idx] for x in logits], [x[img_idx] for x in distances], image_size
            )
            keep = batched_nms(boxes.tensor, scores, classes, self.nms_thresh_test)
            keep = keep[: self.max_detections_per_image]
            result = Instances(image_size)
            if self.two_stage:
                result.proposal_boxes = boxes[keep]
                result.objectness_logits = scores[keep].logit(eps=1e-6)
            else:
                result.pred_boxes = boxes[keep]
                result.scores = scores[keep]
                result.pred_classes = classes[keep]
            results.append(result)
        return results

    def image_candidates(
        self,
        points: List[Tensor],
        logits: List[Tensor],
        distances: List[Tensor],
        image_size: Tuple[int, int],
    ) -> Tuple[Boxes, Tensor, Tensor]:
        """
        The pre-NMS candidates of one image: those of :meth:`select_candidates` on each level,
        decoded and clipped to the image. Boxes with a non-finite coordinate are dropped, the rest
        of the image's candidates kept.

        Args:
            points: one Tensor[Hi*Wi, 2] per level.
            logits: one Tensor[Hi*Wi, K] per level, of this image.
            distances: one Tensor[Hi*Wi, 4] per level, of this image, in pixels.
            image_size: (height, width) to clip to.

        Returns:
            boxes (Boxes of C), scores Tensor[C], classes long Tensor[C].
        """
        boxes, scores, classes = [], [], []
        for points_l, logits_l, dist_l in zip(points, logits, distances):
            point_idx, class_idx, scores_l = self.select_candidates(logits_l)
            xy, ltrb = points_l[point_idx], dist_l[point_idx]
            boxes.append(torch.cat([xy - ltrb[:, :2], xy + ltrb[:, 2:]], dim=1))
            scores.append(scores_l)
            classes.append(class_idx)
        boxes, scores, classes = cat(boxes), cat(scores), cat(classes)
        # One non-finite distance must not cost the image all its detections (Boxes.clip asserts
        # on it); masking, not branching, keeps this traceable.
        finite = torch.isfinite(boxes).all(dim=1)
        boxes, scores, classes = Boxes(boxes[finite]), scores[finite], classes[finite]
        boxes.clip(image_size)
        return boxes, scores, classes

    def select_candidates(self, logits: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Candidates of one level of one image, as the authors select them (mmdetection's
        ``nms_pre``): the ``topk_candidates_test`` points with the highest maximum class score, then
        the (point, class) pairs of those points whose score is above ``score_thresh_test``.

        Args:
            logits: Tensor[Hi*Wi, K].

        Returns:
            point_idx, class_idx: long Tensor[C] each; scores: Tensor[C], sigmoid of the logits.
        """
        scores = logits.sigmoid()
        # torch.topk ranks NaN above every number: a NaN score must neither be a candidate nor push
        # one out.
        scores = torch.where(torch.isnan(scores), torch.zeros_like(scores), scores)
        max_scores = scores.max(dim=1).values
        num_points = max_scores.shape[0]
        # In tracing the size is a traced tensor: clamping it keeps the cap valid at every input
        # size, where a Python `min` or `if` would freeze the traced size (as detectron2's dense
        # detectors do it).
        if isinstance(num_points, Tensor):
            num_topk = torch.clamp(num_points, max=self.topk_candidates_test)
        else:
            num_topk = min(num_points, self.topk_candidates_test)
        top_idx = max_scores.topk(num_topk).indices
        top_scores = scores[top_idx]  # [k, K]
        top_pos, class_idx = torch.nonzero(top_scores > self.score_thresh_test).unbind(dim=1)
        return top_idx[top_pos], class_idx, top_scores[top_pos, class_idx]


@torch.jit.unused
def check_finite_predictions(logits: List[Tensor], distances: List[Tensor]) -> None:
    """
    Raise detectron2's ``FloatingPointError``, with the iteration, if a prediction is infinite or
    NaN (one check, one synchronization).

    Args:
        logits, distances: one Tensor[N, Hi*Wi, C] per level each.
    """
    finite_logits = torch.stack([torch.isfinite(x).all() for x in logits]).all()
    finite_distances = torch.stack([torch.isfinite(x).all() for x in distances]).all()
    if not bool(finite_logits & finite_distances):
        raise FloatingPointError(
            f"DSLA predictions became infinite or NaN at iteration={get_event_storage().iter}! "
            f"Finite logits: {bool(finite_logits)}, finite distances: {bool(finite_distances)}"
        )


# Configs name it "DSLA" (MODEL.PROPOSAL_GENERATOR.NAME); register() would take the class name.
PROPOSAL_GENERATOR_REGISTRY._do_register("DSLA", DSLAProposalGenerator)
