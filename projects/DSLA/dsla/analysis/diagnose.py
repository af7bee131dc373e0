"""
Per ground truth measurements of a dense detector's label assignment and predictions, to find out
where DSLA and detectron2's FCOS differ: how many positive points each ground truth gets on which
level, how much label mass (``y_s``, ``y_d``) they carry, how well their boxes fit it, what box
loss they get and how the model scores them, how well its top-scored candidate and detection fit
it, and whether the ground truth survives the candidate selection and NMS.

For DSLA the positives are the points whose assigned box ``g*`` is the ground truth with
``y_s > 0`` (docs/method.md, "The label"), ``y_d = y_s * q`` as in training with the model's
current predictions, the score is the sigmoid of the logit of the ground truth's class and the
box loss is the model's own (``box_regression_loss`` with its ``box_loss_type``), before the
``y_s`` weight. For detectron2's FCOS the positives are those of its own matching
(``FCOSBaseline.match_anchors``); its classification target is 1, so ``y_s = y_d = 1``, the score
is its ranking score ``sqrt(classification * centerness)`` and the box loss its GIoU loss of the
decoded boxes.
"""

from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
import torch
from fvcore.nn import giou_loss
from torch import Tensor

from detectron2.layers import cat
from detectron2.structures import Boxes, pairwise_iou
from detectron2.structures.boxes import matched_pairwise_iou

from ..evaluation.score_iou import match_to_ground_truth, pearson, spearman
from ..label_assignment import dynamic_smooth_labels
from ..losses import box_regression_loss, paired_iou
from ..modeling import DSLAProposalGenerator, FCOSBaseline

__all__ = [
    "COCO_AREA_BUCKETS",
    "DEFAULT_ASPECT_EDGES",
    "ImageProbe",
    "coco_size_buckets",
    "edge_buckets",
    "gt_point_statistics",
    "gt_recall",
    "gt_top_and_best_iou",
    "probe_dsla",
    "probe_fcos",
    "probe_model",
    "measure_image",
    "summarize",
    "diagnose_model",
]

# COCO's object sizes: area below 32^2 is small, below 96^2 medium, else large.
COCO_AREA_BUCKETS = (
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, float("inf")),
)

# Aspect-ratio buckets, max(w / h, h / w): near-square objects, elongated ones, and those whose
# short side is a third of the long one or less (the level chosen by the long side may then have
# few points across the short one).
DEFAULT_ASPECT_EDGES = (1.5, 3.0)


class ImageProbe(NamedTuple):
    """
    What a model does with one image, in network-input pixels.

    gt_boxes: Tensor[M, 4] XYXY; gt_classes: long Tensor[M].
    pos_gt, pos_level: long Tensor[P]: the ground truth and the level of each positive point.
    y_s, y_d, ious, scores: Tensor[P]: static and dynamic label, IoU of the decoded prediction with
        its ground truth, and the model's score for the ground truth's class.
    box_losses: Tensor[P]: the model's box loss of each positive, unweighted (DSLA: its
        ``box_loss_type``; FCOS: ``1 - GIoU``), before the weight training gives it.
    giou_losses: Tensor[P]: ``1 - GIoU`` of each positive, whatever the model trains with, so that
        two models can be compared on one figure.
    candidate_boxes, candidate_scores, candidate_classes: Tensor[C, 4], Tensor[C], long Tensor[C]:
        the pre-NMS candidates, with the score inference ranks them by.
    detection_boxes, detection_scores, detection_classes: Tensor[D, 4], Tensor[D], long Tensor[D]:
        the final detections.
    box_weights: Tensor[P]: the weight training gives each positive's box loss (DSLA: ``y_s``,
        or 1 with ``MODEL.DSLA.BOX_LOSS_WEIGHTING "uniform"``; FCOS: 1).
    """

    gt_boxes: Tensor
    gt_classes: Tensor
    pos_gt: Tensor
    pos_level: Tensor
    y_s: Tensor
    y_d: Tensor
    ious: Tensor
    scores: Tensor
    box_losses: Tensor
    giou_losses: Tensor
    candidate_boxes: Tensor
    candidate_scores: Tensor
    candidate_classes: Tensor
    detection_boxes: Tensor
    detection_scores: Tensor
    detection_classes: Tensor
    box_weights: Tensor


def coco_size_buckets(areas: Tensor) -> Tensor:
    """long Tensor[M]: 0 small, 1 medium, 2 large for box areas Tensor[M] (COCO's thresholds)."""
    edges = torch.tensor(
        [hi for _, _, hi in COCO_AREA_BUCKETS[:-1]], dtype=areas.dtype, device=areas.device
    )
    return torch.bucketize(areas, edges, right=True)


def edge_buckets(values: Tensor, edges: Sequence[float]) -> Tensor:
    """long Tensor[M]: index ``i`` with ``edges[i-1] <= value < edges[i]`` (0 below ``edges[0]``)
    for values Tensor[M]."""
    edges = torch.as_tensor(list(edges), dtype=values.dtype, device=values.device)
    return torch.bucketize(values, edges, right=True)


def gt_point_statistics(
    num_gts: int,
    num_levels: int,
    pos_gt: Tensor,
    pos_level: Tensor,
    y_s: Tensor,
    y_d: Tensor,
    ious: Tensor,
    scores: Tensor,
) -> Dict[str, Tensor]:
    """
    Aggregate the positive points of one image per ground truth.

    Args:
        num_gts, num_levels: M and L.
        pos_gt, pos_level: long Tensor[P]: ground truth and level of each positive point.
        y_s, y_d, ious, scores: Tensor[P].

    Returns:
        dict of per-ground-truth tensors: ``num_pos`` long [M, L]; ``sum_y_s``, ``sum_y_d``,
        ``max_y_s``, ``max_y_d`` [M] (0 without positives); ``iou_mean``, ``iou_max``,
        ``score_mean``, ``score_max`` [M] (nan without positives).
    """
    device = y_s.device
    num_pos = torch.zeros(num_gts * num_levels, dtype=torch.long, device=device)
    num_pos.index_add_(0, pos_gt * num_levels + pos_level, torch.ones_like(pos_gt))
    num_pos = num_pos.view(num_gts, num_levels)
    count = num_pos.sum(dim=1)

    def reduce(values: Tensor, how: str) -> Tensor:
        # Labels, IoUs and sigmoid scores are >= 0, so 0 is a neutral start for both reductions.
        return torch.zeros(num_gts, device=device).scatter_reduce(
            0, pos_gt, values.float(), how, include_self=True
        )

    empty = count == 0
    nan = torch.tensor(float("nan"), device=device)
    stats = {
        "num_pos": num_pos,
        "sum_y_s": reduce(y_s, "sum"),
        "sum_y_d": reduce(y_d, "sum"),
        "max_y_s": reduce(y_s, "amax"),
        "max_y_d": reduce(y_d, "amax"),
    }
    for name, values in (("iou", ious), ("score", scores)):
        stats[f"{name}_mean"] = torch.where(empty, nan, reduce(values, "sum") / count.clamp(min=1))
        stats[f"{name}_max"] = torch.where(empty, nan, reduce(values, "amax"))
    return stats


def gt_recall(
    gt_boxes: Tensor, gt_classes: Tensor, boxes: Tensor, classes: Tensor, iou_threshold: float = 0.5
) -> Tensor:
    """
    bool Tensor[M]: whether some box of the ground truth's class overlaps it with IoU >=
    ``iou_threshold``.

    Args:
        gt_boxes: Tensor[M, 4]; gt_classes: long Tensor[M]; boxes: Tensor[D, 4]; classes: long
            Tensor[D].
    """
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return torch.zeros(len(gt_boxes), dtype=torch.bool, device=gt_boxes.device)
    iou = pairwise_iou(Boxes(gt_boxes), Boxes(boxes))  # [M, D]
    same_class = gt_classes[:, None] == classes[None, :]
    return ((iou >= iou_threshold) & same_class).any(dim=1)


def gt_top_and_best_iou(
    gt_boxes: Tensor, gt_classes: Tensor, boxes: Tensor, scores: Tensor, classes: Tensor
) -> Tuple[Tensor, Tensor]:
    """
    Per ground truth, the IoU of its top-scored box and the best IoU of its boxes, where each box
    belongs to the ground truth of its class it overlaps most (as ``ScoreIoUEvaluator`` matches
    detections, :func:`match_to_ground_truth`); a box that overlaps none belongs to none.

    NMS keeps the top-scored box of an object, so the first IoU is the one AP sees; the gap to the
    second is what a better ranking would gain.

    Args:
        gt_boxes: Tensor[M, 4]; gt_classes: long Tensor[M].
        boxes: Tensor[D, 4]; scores: Tensor[D]; classes: long Tensor[D].

    Returns:
        top_iou, best_iou: Tensor[M], nan for a ground truth without boxes. With tied top scores the
        best IoU among them counts, as in ``ScoreIoUEvaluator``.
    """
    device, num_gts = gt_boxes.device, len(gt_boxes)
    ious, gt_index = match_to_ground_truth(boxes.float(), classes, gt_boxes.float(), gt_classes)
    ious, gt_index = ious.to(device), gt_index.to(device)
    matched = gt_index >= 0
    ious, scores, gt_index = ious[matched], scores[matched].float(), gt_index[matched]

    top_score = torch.full((num_gts,), -float("inf"), device=device)
    top_score = top_score.scatter_reduce(0, gt_index, scores, "amax")
    is_top = scores == top_score[gt_index]
    # IoUs are >= 0, so 0 is a neutral start for the maxima.
    zeros = torch.zeros(num_gts, device=device)
    top_iou = zeros.scatter_reduce(0, gt_index[is_top], ious[is_top], "amax")
    best_iou = zeros.scatter_reduce(0, gt_index, ious, "amax")
    empty = torch.bincount(gt_index, minlength=num_gts) == 0
    nan = torch.tensor(float("nan"), device=device)
    return torch.where(empty, nan, top_iou), torch.where(empty, nan, best_iou)


def _gt_instances(model, batched_inputs):
    return [x["instances"].to(model.device) for x in batched_inputs]


def _match_reconstructed_boxes(boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """
    long Tensor[P]: the ground truth each box (a point plus its regression target) was built from.
    The targets are exact differences, so the nearest ground truth is the assigned one; among
    identical ground truths the first, as the assignment breaks its ties.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    return (boxes[:, None, :] - gt_boxes[None, :, :]).abs().sum(dim=2).argmin(dim=1)


@torch.no_grad()
def probe_dsla(model, batched_inputs: List[dict]) -> List[ImageProbe]:
    """
    Run a ``DSLA`` detector on inputs with ``instances`` and return, per image, its positives as
    training labels them and its pre-NMS candidates and detections as inference selects them.
    """
    pg = model.proposal_generator
    images = model.preprocess_image(batched_inputs)
    features = model.backbone(images.tensor)
    points, logits, distances = pg.predict([features[f] for f in pg.in_features])
    gt_instances = _gt_instances(model, batched_inputs)
    static, classes, box_targets = pg.label_points(
        points, gt_instances
    )  # [N, R], [N, R], [N, R, 4]
    detections = pg.inference(points, logits, distances, images.image_sizes)

    all_points = cat(points)
    levels = cat(
        [torch.full((len(p),), i, dtype=torch.long, device=p.device) for i, p in enumerate(points)]
    )
    all_logits, all_distances = cat(logits, dim=1), cat(distances, dim=1)
    probes = []
    for i, (inst, image_size) in enumerate(zip(gt_instances, images.image_sizes)):
        pos = static[i] > 0
        xy, targets = all_points[pos], box_targets[i, pos]
        gt_boxes = inst.gt_boxes.tensor
        pos_gt = _match_reconstructed_boxes(
            torch.cat([xy - targets[:, :2], xy + targets[:, 2:]], dim=1), gt_boxes
        )
        y_s = static[i, pos]
        pred = all_distances[i, pos].float()
        ious = paired_iou(pred, targets)
        y_d = dynamic_smooth_labels(y_s, ious, pg.iou_coupling, pg.iou_only)
        scores = all_logits[i, pos].sigmoid().gather(1, classes[i, pos, None]).squeeze(1)
        cand_boxes, cand_scores, cand_classes = pg.image_candidates(
            points, [x[i] for x in logits], [x[i] for x in distances], image_size
        )
        det = detections[i]
        probes.append(
            ImageProbe(
                gt_boxes,
                inst.gt_classes,
                pos_gt,
                levels[pos],
                y_s,
                y_d,
                ious,
                scores,
                box_regression_loss(pred, targets, pg.box_loss_type),
                box_regression_loss(pred, targets, "giou"),
                cand_boxes.tensor,
                cand_scores,
                cand_classes,
                det.pred_boxes.tensor,
                det.scores,
                det.pred_classes,
                pg.box_loss_weights(y_s),
            )
        )
    return probes


@torch.no_grad()
def probe_fcos(model: FCOSBaseline, batched_inputs: List[dict]) -> List[ImageProbe]:
    """
    Run detectron2's FCOS (:class:`FCOSBaseline`) on inputs with ``instances`` and return, per
    image, the positives of its own matching, the candidates of its own pre-NMS selection and its
    detections.
    """
    images = model.preprocess_image(batched_inputs)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    predictions = model.head(features)
    pred_logits, pred_deltas, pred_ctr = model.dense_predictions(predictions)
    anchors = model.anchor_generator(features)
    # forward_inference applies sigmoid_ in place, possibly on views of the raw predictions: give it
    # copies.
    detections = model.forward_inference(
        images, features, [[x.clone() for x in p] for p in predictions]
    )

    all_anchors = Boxes.cat(anchors).tensor
    levels = cat(
        [
            torch.full((len(a),), i, dtype=torch.long, device=all_anchors.device)
            for i, a in enumerate(anchors)
        ]
    )
    gt_instances = _gt_instances(model, batched_inputs)
    probes = []
    for i, (inst, image_size) in enumerate(zip(gt_instances, images.image_sizes)):
        rank_scores = [
            torch.sqrt(x[i].sigmoid() * y[i].sigmoid()) for x, y in zip(pred_logits, pred_ctr)
        ]
        deltas = [x[i] for x in pred_deltas]
        if len(inst) > 0:
            # label_anchors' rule: the best match of each anchor, if any.
            match_quality, matched = model.match_anchors(inst.gt_boxes, anchors).max(dim=0)
            pos = match_quality >= 1e-5
        else:
            pos = torch.zeros(len(all_anchors), dtype=torch.bool, device=all_anchors.device)
            matched = torch.zeros(len(all_anchors), dtype=torch.long, device=all_anchors.device)
        pos_gt = matched[pos]
        boxes = model.box2box_transform.apply_deltas(cat(deltas)[pos], all_anchors[pos])
        ious = matched_pairwise_iou(Boxes(boxes), inst.gt_boxes[pos_gt])
        # detectron2's FCOS box loss (_dense_box_regression_loss, "giou"), before its sum.
        box_losses = giou_loss(boxes, inst.gt_boxes.tensor[pos_gt], reduction="none")
        scores = cat(rank_scores)[pos].gather(1, inst.gt_classes[pos_gt, None]).squeeze(1)
        ones = torch.ones_like(ious)
        candidates = model.decode_candidates(anchors, rank_scores, deltas, image_size)
        det = detections[i]
        probes.append(
            ImageProbe(
                inst.gt_boxes.tensor,
                inst.gt_classes,
                pos_gt,
                levels[pos],
                ones,
                ones,
                ious,
                scores,
                box_losses,
                box_losses,
                candidates.pred_boxes.tensor,
                candidates.scores,
                candidates.pred_classes,
                det.pred_boxes.tensor,
                det.scores,
                det.pred_classes,
                ones,
            )
        )
    return probes


def probe_model(model, batched_inputs: List[dict]) -> Tuple[List[ImageProbe], List[str]]:
    """
    :func:`probe_dsla` or :func:`probe_fcos`, whichever fits the model; also the names of its
    levels.
    """
    if isinstance(model, FCOSBaseline):
        return probe_fcos(model, batched_inputs), list(model.head_in_features)
    pg = getattr(model, "proposal_generator", None)
    if isinstance(pg, DSLAProposalGenerator):
        return probe_dsla(model, batched_inputs), list(pg.in_features)
    raise TypeError(
        f"Cannot diagnose a {type(model).__name__}: expected detectron2's FCOS as FCOSBaseline or "
        "a detector whose proposal generator is DSLA"
    )


def measure_image(
    probe: ImageProbe, num_levels: int, input_size: Tuple[int, int], original_size: Tuple[int, int]
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """
    Per ground truth and per positive point measurements of one image.

    Args:
        input_size, original_size: (height, width) of the network input (before padding) and of the
            image file; the COCO area buckets use the area in original pixels.

    Returns:
        per_gt: ``area`` (original pixels), ``max_side`` (input pixels), ``aspect`` (``max(w / h, h
            / w)``), the entries of :func:`gt_point_statistics`, ``recall_candidates`` and
            ``recall_detections``, ``top_candidate_iou`` and ``best_candidate_iou`` (the pre-NMS
            candidates), ``top_detection_iou`` and ``best_detection_iou`` (the final detections) of
            :func:`gt_top_and_best_iou`; each [M, ...].
        per_point: ``gt``, ``level``, ``y_s``, ``y_d``, ``iou``, ``score``, ``box_loss``,
            ``giou_loss``, ``box_weight`` of each positive; each [P].
    """
    gt_boxes = probe.gt_boxes.float()
    widths, heights = gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1]
    scale = (original_size[0] / input_size[0]) * (original_size[1] / input_size[1])
    max_sides, min_sides = torch.maximum(widths, heights), torch.minimum(widths, heights)
    top_candidate_iou, best_candidate_iou = gt_top_and_best_iou(
        gt_boxes,
        probe.gt_classes,
        probe.candidate_boxes,
        probe.candidate_scores,
        probe.candidate_classes,
    )
    top_detection_iou, best_detection_iou = gt_top_and_best_iou(
        gt_boxes,
        probe.gt_classes,
        probe.detection_boxes,
        probe.detection_scores,
        probe.detection_classes,
    )
    per_gt = {
        "area": widths * heights * scale,
        "max_side": max_sides,
        # A degenerate box (a side of 0) is as elongated as can be.
        "aspect": max_sides / min_sides.clamp(min=1e-6),
        **gt_point_statistics(
            len(gt_boxes),
            num_levels,
            probe.pos_gt,
            probe.pos_level,
            probe.y_s,
            probe.y_d,
            probe.ious,
            probe.scores,
        ),
        "recall_candidates": gt_recall(
            gt_boxes, probe.gt_classes, probe.candidate_boxes, probe.candidate_classes
        ),
        "recall_detections": gt_recall(
            gt_boxes, probe.gt_classes, probe.detection_boxes, probe.detection_classes
        ),
        "top_candidate_iou": top_candidate_iou,
        "best_candidate_iou": best_candidate_iou,
        "top_detection_iou": top_detection_iou,
        "best_detection_iou": best_detection_iou,
    }
    per_point = {
        "gt": probe.pos_gt,
        "level": probe.pos_level,
        "y_s": probe.y_s,
        "y_d": probe.y_d,
        "iou": probe.ious,
        "score": probe.scores,
        "box_loss": probe.box_losses,
        "giou_loss": probe.giou_losses,
        "box_weight": probe.box_weights,
    }
    return _to_numpy(per_gt), _to_numpy(per_point)


def _to_numpy(tensors: Dict[str, Tensor]) -> Dict[str, np.ndarray]:
    return {
        k: (v.float() if v.is_floating_point() else v).cpu().numpy() for k, v in tensors.items()
    }


def _mean(values: np.ndarray) -> float:
    """Mean of the finite values; nan if there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def _box_loss_summary(points: Dict[str, np.ndarray], on: np.ndarray, total_weight: float) -> Dict:
    """
    The box-loss figures of the positive points ``on`` (bool [P]). Training divides the sum of
    ``weight * loss`` by the sum of the weights (DSLA: ``y_s``; FCOS and DSLA's "uniform"
    weighting: 1 a positive), so the weights of all positives add up to one either way; what the
    weights change is how that is shared out, which ``box_weight_share`` measures against
    ``total_weight`` (the sum over all positives of the diagnosis).
    """
    weight, loss = points["box_weight"][on].astype(np.float64), points["box_loss"][on]
    return {
        "box_loss_per_positive": _mean(loss),
        "weighted_box_loss_per_positive": _mean(weight * loss),
        "giou_loss_per_positive": _mean(points["giou_loss"][on]),
        "box_weight_share": float(weight.sum() / total_weight)
        if total_weight > 0
        else float("nan"),
    }


def _bucket_summary(
    gts: Dict[str, np.ndarray], points: Dict[str, np.ndarray], mask: np.ndarray, total_weight: float
) -> Dict:
    num_pos = gts["num_pos"][mask]  # [G, L]
    total = num_pos.sum(axis=1)
    on_bucket = mask[points["gt"]]
    score, iou = points["score"][on_bucket], points["iou"][on_bucket]
    summary = {
        "num_gts": int(mask.sum()),
        "zero_pos_share": _mean(total == 0),
        "zero_pos_share_per_level": [_mean(c) for c in (num_pos == 0).T],
        "pos_per_gt": _mean(total),
        "pos_per_gt_per_level": [_mean(c) for c in num_pos.T],
    }
    for key in (
        "sum_y_s",
        "sum_y_d",
        "max_y_s",
        "max_y_d",
        "iou_mean",
        "iou_max",
        "score_mean",
        "score_max",
    ):
        summary[key] = _mean(gts[key][mask])
    summary["pearson_score_iou"] = pearson(score, iou)
    summary["spearman_score_iou"] = spearman(score, iou)
    summary["recall_candidates"] = _mean(gts["recall_candidates"][mask])
    summary["recall_detections"] = _mean(gts["recall_detections"][mask])
    for kind in ("candidate", "detection"):
        top = gts[f"top_{kind}_iou"][mask]
        summary[f"top_{kind}_iou"] = _mean(top)
        summary[f"best_{kind}_iou"] = _mean(gts[f"best_{kind}_iou"][mask])
        # Over all the bucket's ground truths: one without a box (nan) counts as missed, as in AP.
        for threshold in (50, 75):
            summary[f"top_{kind}_iou{threshold}_share"] = _mean(top >= threshold / 100)
    summary.update(_box_loss_summary(points, on_bucket, total_weight))
    return summary


def _level_summary(
    gts: Dict[str, np.ndarray],
    points: Dict[str, np.ndarray],
    level: int,
    num_images: int,
    total_weight: float,
) -> Dict:
    on_level = points["level"] == level
    summary = {
        "positives_per_image": float(on_level.sum()) / max(num_images, 1),
        "gts_with_positives_share": _mean(gts["num_pos"][:, level] > 0),
    }
    for key in ("y_s", "y_d", "iou", "score"):
        summary[f"mean_{key}"] = _mean(points[key][on_level])
    summary["pearson_score_iou"] = pearson(points["score"][on_level], points["iou"][on_level])
    summary.update(_box_loss_summary(points, on_level, total_weight))
    return summary


def _edge_masks(prefix: str, values: np.ndarray, edges: Sequence[float], low: float) -> Dict:
    """One bool mask per bucket of :func:`edge_buckets`, named ``"{prefix} {lo}-{hi}"``."""
    index = edge_buckets(torch.from_numpy(values), edges).numpy()
    bounds = [low, *edges, float("inf")]
    return {
        f"{prefix} {lo:g}-{hi:g}": index == i
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))
    }


def summarize(
    per_gt: List[Dict[str, np.ndarray]],
    per_point: List[Dict[str, np.ndarray]],
    level_names: Sequence[str],
    side_edges: Sequence[float],
    aspect_edges: Sequence[float] = DEFAULT_ASPECT_EDGES,
) -> Dict:
    """
    Aggregate the outputs of :func:`measure_image` over images: per bucket (all, COCO small /
    medium / large by original area, by max side at the network input with ``side_edges`` and by
    aspect ratio ``max(w / h, h / w)`` with ``aspect_edges``) and per level. Means over ground
    truths; IoU and score means only over the ground truths that have positives (those of the top
    and best candidate and detection over the ground truths that have one), the shares
    ``top_*_iou{50,75}_share`` over all of them; the correlations and box losses over the positive
    points of the bucket or level (see :func:`_box_loss_summary`).
    """
    offsets = np.cumsum([0] + [len(d["area"]) for d in per_gt])
    gts = {k: np.concatenate([d[k] for d in per_gt]) for k in per_gt[0]}
    points = {k: np.concatenate([d[k] for d in per_point]) for k in per_point[0]}
    points["gt"] = np.concatenate([d["gt"] + offset for d, offset in zip(per_point, offsets)])
    total_weight = float(points["box_weight"].astype(np.float64).sum())

    coco = coco_size_buckets(torch.from_numpy(gts["area"])).numpy()
    masks = {"all": np.ones(len(coco), dtype=bool)}
    masks.update({name: coco == i for i, (name, _, _) in enumerate(COCO_AREA_BUCKETS)})
    masks.update(_edge_masks("side", gts["max_side"], side_edges, low=0.0))
    masks.update(_edge_masks("aspect", gts["aspect"], aspect_edges, low=1.0))
    return {
        "num_images": len(per_gt),
        "num_gts": int(offsets[-1]),
        "buckets": {
            name: _bucket_summary(gts, points, mask, total_weight) for name, mask in masks.items()
        },
        "levels": {
            name: _level_summary(gts, points, level, len(per_gt), total_weight)
            for level, name in enumerate(level_names)
        },
    }


def diagnose_model(
    model,
    inputs: List[dict],
    side_edges: Sequence[float],
    batch_size: int = 4,
    aspect_edges: Sequence[float] = DEFAULT_ASPECT_EDGES,
) -> Dict:
    """
    Measure ``model`` (in eval mode) on mapped inputs with ``instances``, ``height`` and ``width``,
    in batches padded as in training; see :func:`summarize` for the result.
    """
    per_gt, per_point = [], []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        probes, level_names = probe_model(model, batch)
        for probe, x in zip(probes, batch):
            gt, point = measure_image(
                probe, len(level_names), tuple(x["image"].shape[-2:]), (x["height"], x["width"])
            )
            per_gt.append(gt)
            per_point.append(point)
    if not per_gt:
        raise ValueError("No images to diagnose")
    return summarize(per_gt, per_point, level_names, side_edges, aspect_edges)
