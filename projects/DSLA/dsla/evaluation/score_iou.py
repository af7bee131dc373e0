"""
Does the classification score track localization quality? The measurement behind DSLA's motivation
(docs/method.md, "Score and IoU"): for every detection, the IoU with its best-matching ground truth
of the same class, against its score.
"""

import itertools
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

__all__ = [
    "ScoreIoUEvaluator",
    "gt_pair_concordance",
    "load_score_iou_pairs",
    "match_to_ground_truth",
    "pearson",
    "spearman",
    "summarize_score_iou",
]

logger = logging.getLogger(__name__)

PAIRS_FILE_NAME = "score_iou_pairs.npz"


def match_to_ground_truth(
    pred_boxes: torch.Tensor,
    pred_classes: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Match every detection to the ground truth of its class it overlaps most.

    Args:
        pred_boxes: Tensor[D, 4] XYXY; pred_classes: Tensor[D] long.
        gt_boxes: Tensor[G, 4] XYXY; gt_classes: Tensor[G] long. G may be 0.

    Returns:
        ious: Tensor[D], the IoU with the matched ground truth, 0 when no box of that class
            overlaps.
        gt_index: Tensor[D] long, index of the matched ground truth in ``gt_boxes``, -1 when
            ``ious`` is 0.
    """
    num_dets = len(pred_boxes)
    if num_dets == 0 or len(gt_boxes) == 0:
        return pred_boxes.new_zeros(num_dets), torch.full((num_dets,), -1, dtype=torch.long)
    iou = pairwise_iou(Boxes(pred_boxes), Boxes(gt_boxes))  # [D, G]
    iou = torch.where(pred_classes[:, None] == gt_classes[None, :], iou, torch.zeros_like(iou))
    ious, gt_index = iou.max(dim=1)
    gt_index[ious <= 0] = -1
    return ious, gt_index


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, tied values sharing the mean of their ranks (as for Spearman's rho)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    run_starts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_x)) + 1])
    run_ends = np.concatenate([run_starts[1:], [len(x)]])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((run_starts + run_ends + 1) / 2.0, run_ends - run_starts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation; nan when undefined (fewer than 2 values, or either one constant)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return math.nan
    dx = x - x.mean()
    dy = y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    if denominator == 0:
        return math.nan
    return float(np.clip((dx * dy).sum() / denominator, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's over average ranks); nan when undefined."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return math.nan
    return pearson(_average_ranks(x), _average_ranks(y))


def gt_pair_concordance(
    scores: np.ndarray,
    ious: np.ndarray,
    group: np.ndarray,
    num_groups: int,
    *,
    max_pairs: int = 1 << 22,
) -> float:
    """
    How well scores rank each ground truth's detections by localization, independent of how many it
    has: for every pair of detections of the same ground truth (``group``) with different IoUs, 1 if
    the higher-scored one has the higher IoU, 0 if the lower-scored one has, 1/2 if their scores
    tie; averaged over each ground truth's pairs, then over the ground truths that have such a pair.
    1/2 is a score that ignores localization, 1 a perfect ranking; nan when no ground truth has two
    detections of different IoUs.

    Pairs are formed about ``max_pairs`` at a time (whole ground truths), so that thousands of
    detections of one image do not need memory quadratic in their number at once.
    """
    order = np.argsort(group, kind="stable")
    group, scores, ious = group[order], scores[order], ious[order]
    # Detection k pairs with the n_after[k] detections after it in its ground truth's run: pairs
    # number pair_begin[k] .. pair_begin[k] + n_after[k] - 1 of all.
    index = np.arange(len(group))
    n_after = np.searchsorted(group, group, side="right") - index - 1
    pair_begin = np.cumsum(n_after) - n_after
    sums, counts = np.zeros(num_groups), np.zeros(num_groups)
    start = 0
    while start < len(group):
        stop = int(np.searchsorted(pair_begin, pair_begin[start] + max_pairs, side="left"))
        stop = int(
            np.searchsorted(group, group[max(stop, start + 1) - 1], side="right")
        )  # end of a ground truth
        repeats = n_after[start:stop]
        first = np.repeat(index[start:stop], repeats)
        pair_number = pair_begin[start] + np.arange(len(first))
        second = first + 1 + pair_number - np.repeat(pair_begin[start:stop], repeats)
        iou_sign = np.sign(ious[first] - ious[second])
        informative = iou_sign != 0
        # 1 concordant, 0 discordant, 1/2 for tied scores (sign 0).
        value = (np.sign(scores[first] - scores[second]) * iou_sign + 1) / 2
        pair_group = group[first][informative]
        sums += np.bincount(pair_group, weights=value[informative], minlength=num_groups)
        counts += np.bincount(pair_group, minlength=num_groups)
        start = stop
    has_pairs = counts > 0
    return float((sums[has_pairs] / counts[has_pairs]).mean()) if has_pairs.any() else math.nan


def summarize_score_iou(
    scores: np.ndarray,
    ious: np.ndarray,
    image_index: np.ndarray,
    gt_index: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    topk: Sequence[int] = (10, 100),
) -> Dict[str, float]:
    """
    The consistency figures of a set of detections, each matched by :func:`match_to_ground_truth`.

    Args:
        scores, ious: [D] float; image_index: [D] int, the image of each detection; gt_index: [D]
            int, the matched ground truth within its image (-1 for none).
        iou_threshold: detections with ``iou >= iou_threshold`` are "matched".
        topk: for each k, the mean IoU of the k highest-scored detections of an image (all of them
            when it has fewer), averaged over the images that have detections; unmatched detections
            count as IoU 0.

    Returns:
        Floats: ``pearson``, ``spearman`` (score vs IoU over matched detections),
        ``num_detections``, ``num_matched_detections``, ``mean_matched_iou``, ``num_matched_gt``
        (ground truths that are the match of at least one matched detection),
        ``gt_top_score_not_best_iou`` (the fraction of those whose highest-scored matched detection
        is less well localized than their best-localized one; with tied top scores the best IoU
        among them counts), ``gt_pair_concordance`` (:func:`gt_pair_concordance` of the matched
        detections: unlike the fraction, it does not grow with the number of detections per ground
        truth), ``mean_iou_top{k}``. Figures that are undefined (too few detections, constant
        scores) are nan.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ious = np.asarray(ious, dtype=np.float64)
    image_index = np.asarray(image_index, dtype=np.int64)
    gt_index = np.asarray(gt_index, dtype=np.int64)

    matched = ious >= iou_threshold
    results = {
        "pearson": pearson(scores[matched], ious[matched]),
        "spearman": spearman(scores[matched], ious[matched]),
        "num_detections": float(len(scores)),
        "num_matched_detections": float(matched.sum()),
        "mean_matched_iou": float(ious[matched].mean()) if matched.any() else math.nan,
    }

    # One group per matched ground truth, i.e. per (image, gt) pair.
    _, group = np.unique(
        np.stack([image_index[matched], gt_index[matched]], axis=1), axis=0, return_inverse=True
    )
    group = group.reshape(-1)
    num_gt = int(group.max()) + 1 if len(group) else 0
    m_scores, m_ious = scores[matched], ious[matched]
    top_score = np.full(num_gt, -np.inf)
    np.maximum.at(top_score, group, m_scores)
    best_iou = np.zeros(num_gt)
    np.maximum.at(best_iou, group, m_ious)
    iou_of_top_scored = np.zeros(num_gt)
    is_top_scored = m_scores == top_score[group]
    np.maximum.at(iou_of_top_scored, group[is_top_scored], m_ious[is_top_scored])
    results["num_matched_gt"] = float(num_gt)
    results["gt_top_score_not_best_iou"] = (
        float((iou_of_top_scored < best_iou).mean()) if num_gt else math.nan
    )
    results["gt_pair_concordance"] = gt_pair_concordance(m_scores, m_ious, group, num_gt)

    # Sort by image, then by descending score, to read each image's top k off the front of its run.
    order = np.lexsort((-scores, image_index))
    sorted_images, sorted_ious = image_index[order], ious[order]
    _, run_starts, run_lengths = np.unique(sorted_images, return_index=True, return_counts=True)
    rank_in_image = np.arange(len(order)) - np.repeat(run_starts, run_lengths)
    for k in topk:
        in_top = rank_in_image < k
        top_sums = (
            np.add.reduceat(np.where(in_top, sorted_ious, 0.0), run_starts)
            if len(order)
            else np.zeros(0)
        )
        top_means = top_sums / np.minimum(run_lengths, k)
        results[f"mean_iou_top{k}"] = float(top_means.mean()) if len(top_means) else math.nan
    return results


def load_score_iou_pairs(path: str) -> Dict[str, np.ndarray]:
    """
    Read the file :class:`ScoreIoUEvaluator` writes: arrays ``scores``, ``ious``, ``classes``,
    ``image_index``, ``gt_index`` (one entry per detection) and ``iou_threshold``, ``topk``.
    """
    with PathManager.open(path, "rb") as f:
        # The pairs are plain arrays: a pickled object array would run code from the file.
        data = np.load(f, allow_pickle=False)
        return {k: data[k] for k in data.files}


class ScoreIoUEvaluator(DatasetEvaluator):
    """
    Score-vs-IoU consistency of a detector's outputs (docs/method.md, "Score and IoU"): each
    detection is matched to the ground truth of its class it overlaps most, and
    :func:`summarize_score_iou` reports the correlation of score and IoU for detections with IoU >=
    0.5, the fraction of ground truths whose highest-scored detection is not their best-localized
    one, and the mean IoU of each image's top-k detections.

    It measures whatever ``Instances`` the model returns, i.e. detections after NMS. To measure them
    before NMS would remove them, run the model with NMS disabled, e.g. ``MODEL.DSLA.NMS_THRESH_TEST
    1.0`` (or ``MODEL.FCOS.NMS_THRESH_TEST 1.0``), and raise ``TEST.DETECTIONS_PER_IMAGE`` to keep
    more of them.

    Ground truth comes from ``DatasetCatalog.get(dataset_name)``: boxes of any ``BoxMode``,
    ``category_id`` in detectron2's contiguous ids (what ``load_coco_json`` returns); crowd
    annotations are not matched.

    Results (on the main process; ``{}`` elsewhere) are ``{"score_iou": {name: float}}``; undefined
    figures are nan. With ``output_dir``, the per-detection pairs are saved as
    ``score_iou_pairs.npz`` (see :func:`load_score_iou_pairs`).
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        *,
        distributed: bool = True,
        iou_threshold: float = 0.5,
        topk: Sequence[int] = (10, 100),
        dataset_ids: bool = False,
    ):
        """
        Args:
            dataset_name: a dataset registered in ``DatasetCatalog``.
            output_dir: where to save the per-detection pairs; None to not save them.
            distributed: gather the detections of all workers before summarizing.
            iou_threshold, topk: see :func:`summarize_score_iou`.
            dataset_ids: the dicts' ``category_id`` are the dataset's own ids; map them to
                contiguous ids with the metadata's ``thing_dataset_id_to_contiguous_id``.
        """
        self._output_dir = output_dir
        self._distributed = distributed
        self._iou_threshold = iou_threshold
        self._topk = tuple(int(k) for k in topk)
        self._cpu_device = torch.device("cpu")

        id_map = (
            MetadataCatalog.get(dataset_name).thing_dataset_id_to_contiguous_id
            if dataset_ids
            else None
        )
        self._gt = {}
        for record in DatasetCatalog.get(dataset_name):
            annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
            boxes = [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations
            ]
            classes = [
                a["category_id"] if id_map is None else id_map[a["category_id"]]
                for a in annotations
            ]
            self._gt[record["image_id"]] = (
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.tensor(classes, dtype=torch.long),
            )
        self.reset()

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            instances = output["instances"].to(self._cpu_device)
            gt_boxes, gt_classes = self._gt[input["image_id"]]
            ious, gt_index = match_to_ground_truth(
                instances.pred_boxes.tensor, instances.pred_classes, gt_boxes, gt_classes
            )
            self._predictions.append(
                {
                    "scores": instances.scores.numpy(),
                    "ious": ious.numpy(),
                    "classes": instances.pred_classes.numpy(),
                    "gt_index": gt_index.numpy(),
                }
            )

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions

        dtypes = {
            "scores": np.float32,
            "ious": np.float32,
            "classes": np.int64,
            "gt_index": np.int64,
        }
        pairs = {
            key: np.concatenate([p[key] for p in predictions])
            if predictions
            else np.zeros(0, dtype)
            for key, dtype in dtypes.items()
        }
        pairs["image_index"] = np.repeat(
            np.arange(len(predictions)), [len(p["scores"]) for p in predictions]
        )
        results = summarize_score_iou(
            pairs["scores"],
            pairs["ious"],
            pairs["image_index"],
            pairs["gt_index"],
            iou_threshold=self._iou_threshold,
            topk=self._topk,
        )
        results["num_images"] = float(len(predictions))

        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, PAIRS_FILE_NAME)
            with PathManager.open(path, "wb") as f:
                np.savez(f, iou_threshold=self._iou_threshold, topk=np.array(self._topk), **pairs)
            logger.info(f"Saved {len(pairs['scores'])} (score, IoU) pairs to {path}")
        logger.info(f"Score-IoU consistency: {results}")
        return OrderedDict(score_iou=results)
