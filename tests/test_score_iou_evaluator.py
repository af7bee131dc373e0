import math
import uuid

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from dsla.evaluation import ScoreIoUEvaluator, load_score_iou_pairs, summarize_score_iou
from dsla.evaluation.score_iou import gt_pair_concordance, pearson, spearman

GT_BOX = [0.0, 0.0, 100.0, 100.0]


def box_with_iou(iou, x0=0.0):
    """The box whose IoU with ``GT_BOX`` shifted right by x0 is ``iou`` (it lies inside that
    box)."""
    return [x0, 0.0, x0 + 100.0, 100.0 * iou]


def annotation(box, category_id, **kwargs):
    return {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": category_id, **kwargs}


@pytest.fixture
def register():
    """Register a dataset of the given dicts under a fresh name; remove it after the test."""
    names = []

    def _register(dicts, **metadata):
        name = f"score_iou_test_{uuid.uuid4().hex}"
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(thing_classes=["a", "b"], **metadata)
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def image(image_id, annotations):
    return {"image_id": image_id, "height": 200, "width": 300, "annotations": annotations}


def evaluate(dataset_name, detections_per_image, **kwargs):
    """detections_per_image: {image_id: [(box, score, class), ...]}; run the evaluator over them."""
    evaluator = ScoreIoUEvaluator(dataset_name, **kwargs)
    evaluator.reset()
    for image_id, detections in detections_per_image.items():
        instances = Instances((200, 300))
        instances.pred_boxes = Boxes(
            torch.tensor([d[0] for d in detections], dtype=torch.float32).reshape(-1, 4)
        )
        instances.scores = torch.tensor([d[1] for d in detections], dtype=torch.float32)
        instances.pred_classes = torch.tensor([d[2] for d in detections], dtype=torch.long)
        evaluator.process(
            [{"image_id": image_id, "height": 200, "width": 300}], [{"instances": instances}]
        )
    return evaluator.evaluate()["score_iou"]


def test_scores_equal_to_ious_give_correlation_one(register):
    name = register([image(1, [annotation(GT_BOX, 0)])])
    ious = [0.55, 0.6, 0.7, 0.8, 0.9, 1.0]
    results = evaluate(name, {1: [(box_with_iou(q), q, 0) for q in ious]})
    assert results["pearson"] == pytest.approx(1.0, abs=1e-5)
    assert results["spearman"] == pytest.approx(1.0)
    assert results["num_detections"] == 6
    assert results["num_matched_detections"] == 6
    assert results["mean_matched_iou"] == pytest.approx(np.mean(ious), abs=1e-5)


def test_reversed_ranking_gives_spearman_minus_one(register):
    name = register([image(1, [annotation(GT_BOX, 0)])])
    ious = [0.55, 0.6, 0.7, 0.8, 0.9, 1.0]
    results = evaluate(name, {1: [(box_with_iou(q), 1.0 - q**2, 0) for q in ious]})
    assert results["spearman"] == pytest.approx(-1.0)
    assert -1.0 < results["pearson"] < -0.9


def test_detections_below_iou_threshold_are_counted_but_not_correlated(register):
    name = register([image(1, [annotation(GT_BOX, 0)])])
    # Perfectly consistent above 0.5; a high-scoring poor box below it must not spoil the
    # correlation.
    detections = [(box_with_iou(q), q, 0) for q in [0.6, 0.8, 1.0]] + [(box_with_iou(0.3), 0.99, 0)]
    results = evaluate(name, {1: detections})
    assert results["spearman"] == pytest.approx(1.0)
    assert results["num_detections"] == 4
    assert results["num_matched_detections"] == 3


def test_detections_of_other_classes_are_not_matched(register):
    name = register([image(1, [annotation(GT_BOX, 0)])])
    detections = [(box_with_iou(q), q, 0) for q in [0.6, 0.8]] + [(GT_BOX, 0.9, 1)]
    results = evaluate(name, {1: detections}, topk=(1,))
    assert results["num_matched_detections"] == 2
    assert results["num_matched_gt"] == 1
    # The top-scored detection is the class-1 box, which matches nothing: IoU 0.
    assert results["mean_iou_top1"] == 0.0


def test_fraction_of_ground_truths_whose_top_score_is_not_best_localized(register):
    gts = [
        annotation(GT_BOX, 0),
        annotation([200.0, 0.0, 300.0, 100.0], 0),
        annotation([0.0, 150.0, 50, 200], 1),
    ]
    name = register([image(1, gts)])
    detections = [
        # First box: the top-scored detection is worse localized than another -> inconsistent.
        (box_with_iou(0.6), 0.9, 0),
        (box_with_iou(0.9), 0.8, 0),
        # Second box: the top-scored detection is the best localized -> consistent.
        (box_with_iou(0.95, x0=200.0), 0.7, 0),
        (box_with_iou(0.7, x0=200.0), 0.6, 0),
        (box_with_iou(0.2, x0=200.0), 0.95, 0),  # below 0.5: not a detection of that box
        # Third box: only a detection under 0.5, so it has no matched detection and is not counted.
        ([0.0, 150.0, 50.0, 160.0], 0.5, 1),
    ]
    results = evaluate(name, {1: detections})
    assert results["num_matched_gt"] == 2
    assert results["gt_top_score_not_best_iou"] == pytest.approx(0.5)


def test_pair_concordance_averages_each_ground_truths_pairs_then_the_ground_truths():
    # Ground truth 0: scores rank its three detections exactly by IoU -> 3 of 3 pairs concordant.
    # Ground truth 1: pairs (a, b) discordant, (a, c) tied in score -> 1/2, (b, c) equal IoU -> not
    # counted: (0 + 1/2) / 2 = 1/4. Ground truth 2: one detection, no pair. Mean over ground truths
    # 0 and 1: 5/8.
    scores = np.array([0.9, 0.5, 0.7, 0.8, 0.4, 0.8, 0.3])
    ious = np.array([0.9, 0.6, 0.8, 0.6, 0.7, 0.7, 0.55])
    group = np.array([0, 0, 0, 1, 1, 1, 2])
    assert gt_pair_concordance(scores, ious, group, 3) == pytest.approx(5 / 8)
    # Many detections for one ground truth do not outweigh another ground truth's one pair.
    many = np.linspace(0.5, 1.0, 50)
    assert gt_pair_concordance(
        np.concatenate([many, [0.9, 0.1]]),
        np.concatenate([many, [0.6, 0.9]]),
        np.array([0] * 50 + [1, 1]),
        2,
    ) == pytest.approx(0.5)
    assert np.isnan(
        gt_pair_concordance(np.array([0.5, 0.6]), np.array([0.7, 0.7]), np.array([0, 0]), 1)
    )
    assert np.isnan(gt_pair_concordance(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), 0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4), st.integers(0, 4)), max_size=40),
    st.integers(1, 30),
)
def test_pair_concordance_equals_the_pairwise_definition_in_any_order_and_chunking(
    detections, max_pairs
):
    group = np.array([g for g, _, _ in detections], dtype=np.int64)
    scores = np.array(
        [s / 4 for _, s, _ in detections]
    )  # few distinct values: ties in score and IoU
    ious = np.array([0.5 + u / 8 for _, _, u in detections])
    per_gt = {}
    for i in range(len(group)):
        for j in range(i + 1, len(group)):
            if group[i] == group[j] and ious[i] != ious[j]:
                value = (
                    0.5
                    if scores[i] == scores[j]
                    else float((scores[i] > scores[j]) == (ious[i] > ious[j]))
                )
                per_gt.setdefault(group[i], []).append(value)
    expected = np.mean([np.mean(v) for v in per_gt.values()]) if per_gt else math.nan
    result = gt_pair_concordance(scores, ious, group, 6, max_pairs=max_pairs)
    assert (math.isnan(result) and math.isnan(expected)) or result == pytest.approx(expected)


def test_tied_top_scores_count_as_consistent_when_one_is_best_localized(register):
    name = register([image(1, [annotation(GT_BOX, 0)])])
    results = evaluate(name, {1: [(box_with_iou(0.6), 0.9, 0), (box_with_iou(0.9), 0.9, 0)]})
    assert results["gt_top_score_not_best_iou"] == 0.0


def test_top_k_mean_iou_is_averaged_over_images_including_those_without_ground_truth(register):
    name = register([image(1, [annotation(GT_BOX, 0)]), image(2, [])])
    results = evaluate(
        name,
        {
            1: [
                (box_with_iou(0.6), 0.5, 0),
                (box_with_iou(0.9), 0.8, 0),
                (box_with_iou(0.8), 0.7, 0),
            ],
            2: [(GT_BOX, 0.9, 0)],
        },
        topk=(1, 2, 10),
    )
    # Image 1 by score: IoU 0.9, 0.8, 0.6; image 2 has one detection and nothing to match: IoU 0.
    assert results["mean_iou_top1"] == pytest.approx((0.9 + 0.0) / 2, abs=1e-5)
    assert results["mean_iou_top2"] == pytest.approx((0.85 + 0.0) / 2, abs=1e-5)
    assert results["mean_iou_top10"] == pytest.approx(
        (np.mean([0.9, 0.8, 0.6]) + 0.0) / 2, abs=1e-5
    )
    assert results["num_images"] == 2


def test_ground_truth_box_modes_crowds_and_dataset_ids(register):
    gts = [
        {"bbox": [0.0, 0.0, 100.0, 100.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 7},
        annotation([200.0, 0.0, 300.0, 100.0], 7, iscrowd=1),
    ]
    name = register([image(1, gts)], thing_dataset_id_to_contiguous_id={3: 1, 7: 0})
    detections = [(box_with_iou(0.8), 0.9, 0), ([200.0, 0.0, 300.0, 100.0], 0.8, 0)]
    results = evaluate(name, {1: detections}, dataset_ids=True)
    assert results["num_matched_detections"] == 1
    assert results["mean_matched_iou"] == pytest.approx(0.8, abs=1e-5)


def test_undefined_figures_are_nan_and_all_figures_are_floats(register):
    name = register([image(1, [annotation(GT_BOX, 0)]), image(2, [])])
    results = evaluate(name, {1: [(box_with_iou(0.7), 0.9, 0)], 2: []})
    assert all(isinstance(v, float) for v in results.values())
    assert math.isnan(results["pearson"]) and math.isnan(results["spearman"])
    assert results["num_matched_detections"] == 1
    # Image 2 has no detections: it has no top k and is left out of the mean.
    assert results["mean_iou_top10"] == pytest.approx(0.7, abs=1e-5)


def test_saved_pairs_reproduce_the_results(register, tmp_path):
    name = register([image(1, [annotation(GT_BOX, 0)]), image(2, [annotation(GT_BOX, 1)])])
    detections = {
        1: [(box_with_iou(q), s, 0) for q, s in [(0.6, 0.3), (0.9, 0.8), (0.7, 0.9), (0.2, 0.1)]],
        2: [(box_with_iou(q), s, 1) for q, s in [(0.55, 0.6), (0.95, 0.5)]],
    }
    results = evaluate(name, detections, output_dir=str(tmp_path))
    pairs = load_score_iou_pairs(str(tmp_path / "score_iou_pairs.npz"))
    assert len(pairs["scores"]) == 6
    np.testing.assert_array_equal(pairs["classes"], [0, 0, 0, 0, 1, 1])
    again = summarize_score_iou(
        pairs["scores"], pairs["ious"], pairs["image_index"], pairs["gt_index"]
    )
    assert again == pytest.approx(
        {k: v for k, v in results.items() if k != "num_images"}, nan_ok=True
    )


def test_spearman_averages_tied_ranks():
    # Ranks of x: 1, 2.5, 2.5, 4; Pearson of the ranks: 4.5 / sqrt(4.5 * 5).
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(
        4.5 / math.sqrt(22.5)
    )
    assert math.isnan(pearson([1.0, 1.0, 1.0], [0.1, 0.5, 0.9]))
