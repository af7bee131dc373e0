"""Detection on large images in overlapping tiles: the tile layout, the merge, and a real model."""

import numpy as np
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from dsla.tiled_inference import TiledPredictor, merge_tile_detections, tile_origins

from conftest import load_config

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"


def test_tiles_cover_the_image_with_at_least_the_overlap():
    assert tile_origins(300, 400, 100) == [0]
    assert tile_origins(1000, 400, 100) == [0, 300, 600]
    origins = tile_origins(2299, 400, 128)
    assert origins[0] == 0 and origins[-1] == 2299 - 400
    assert all(b - a <= 400 - 128 for a, b in zip(origins, origins[1:]))
    with pytest.raises(ValueError, match="cannot overlap"):
        tile_origins(1000, 100, 100)


class _Oracle:
    """
    A stand-in model that sees the objects of a large image: for each tile (given by the offsets it
    was told), the parts of the objects inside it, as a detector would box a cut object.
    """

    def __init__(self, objects, predictor):
        self.objects = torch.tensor(objects, dtype=torch.float32)
        self.predictor = predictor
        self.calls = []

    def __call__(self, batch):
        outputs = []
        for item in batch:
            x0, y0, x1, y1 = self.predictor.pending.pop(0)
            assert (item["height"], item["width"]) == (y1 - y0, x1 - x0)
            b = self.objects.clone()
            b[:, 0::2] = b[:, 0::2].clamp(x0, x1) - x0
            b[:, 1::2] = b[:, 1::2].clamp(y0, y1) - y0
            visible = ((b[:, 2] - b[:, 0]) > 1) & ((b[:, 3] - b[:, 1]) > 1)
            inst = Instances((y1 - y0, x1 - x0))
            inst.pred_boxes = Boxes(b[visible])
            inst.scores = torch.full((int(visible.sum()),), 0.9)
            inst.pred_classes = torch.zeros(int(visible.sum()), dtype=torch.long)
            outputs.append({"instances": inst})
            self.calls.append(item["image"].shape)
        return outputs


def test_each_object_is_found_once_whole_even_where_tiles_cut_it():
    objects = [[380.0, 100.0, 440.0, 160.0], [50.0, 50.0, 90.0, 80.0], [700.0, 350.0, 780.0, 420.0]]
    predictor = TiledPredictor(
        None,
        tile_size=400,
        overlap=100,
        min_size_test=200,
        max_size_test=200,
        nms_thresh=0.6,
        input_format="RGB",
    )
    predictor.pending = predictor.tiles(450, 1000)
    predictor.model = _Oracle(objects, predictor)
    result = predictor(np.zeros((450, 1000, 3), np.uint8))["instances"]
    found = sorted(result.pred_boxes.tensor.tolist())
    assert found == sorted(objects)
    # Each tile went to the model resized as the test input (short side 200).
    assert all(min(shape[1:]) == 200 for shape in predictor.model.calls)


def test_merge_keeps_boxes_at_the_image_border_and_suppresses_duplicates():
    a = Instances((100, 100))
    a.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 20.0, 20.0], [60.0, 10.0, 99.5, 30.0]]))
    a.scores = torch.tensor([0.9, 0.8])
    a.pred_classes = torch.tensor([0, 0])
    b = Instances((100, 100))
    b.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 49.0, 30.0], [10.0, 10.0, 49.0, 30.0]]))
    b.scores = torch.tensor([0.7, 0.6])
    b.pred_classes = torch.tensor([0, 1])
    merged = merge_tile_detections(
        [((0, 0, 100, 100), a), ((50, 0, 150, 100), b)], (100, 150), 0.6, 10
    )
    boxes = merged.pred_boxes.tensor.tolist()
    # a's box at x = 99.5 touches its inner border: dropped; b's copy (60-99) of both classes kept.
    assert [0.0, 0.0, 20.0, 20.0] in boxes and [60.0, 10.0, 99.0, 30.0] in boxes
    assert sorted(merged.pred_classes.tolist()) == [0, 0, 1]


def test_a_real_model_runs_over_a_large_image_in_tiles():
    cfg = load_config(QUICKSTART, ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0"])
    model = build_model(cfg).eval()
    predictor = TiledPredictor.from_config(model, cfg, tile_size=160, overlap=40)
    image = np.random.default_rng(0).integers(0, 255, (300, 520, 3), dtype=np.uint8)
    instances = predictor(image)["instances"]
    assert len(predictor.tiles(300, 520)) == 3 * 4  # rows at 0, 70, 140; columns 120 apart
    assert len(instances) > 0
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 520).all() and (boxes[:, 3] <= 300).all()
