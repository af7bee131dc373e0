"""dsla.visualization: small images drawn enlarged with readable labels, and one contact sheet of
all pictures."""

import numpy as np
import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from dsla.visualization import contact_sheet, draw_ground_truth_and_detections, enlarge

GAP = 8  # white bar between the two panels
SHEET_GAP = 24


@pytest.fixture(scope="module")
def metadata():
    meta = MetadataCatalog.get("dsla_test_visualization")
    meta.thing_classes = ["square", "disc"]
    return meta


def _detections(boxes, scores, classes, size=(160, 160)):
    return Instances(
        size,
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        scores=torch.tensor(scores, dtype=torch.float32),
        pred_classes=torch.tensor(classes, dtype=torch.int64),
    )


NOTHING = _detections([], [], [])


def test_enlarge_scales_the_short_side_to_480_and_leaves_large_images_alone():
    small = np.zeros((160, 200, 3), dtype=np.uint8)
    big, scale = enlarge(small)
    assert big.shape == (480, 600, 3) and scale == (3.0, 3.0)
    large = np.zeros((600, 900, 3), dtype=np.uint8)
    same, scale = enlarge(large)
    assert same is large and scale == (1.0, 1.0)


def test_small_images_are_drawn_enlarged_side_by_side_under_titles(metadata):
    image = np.full((160, 200, 3), 128, dtype=np.uint8)
    picture = draw_ground_truth_and_detections(image, [], NOTHING, metadata, threshold=0.3)
    # Two 480 x 600 panels, the bar between them, and a title strip above.
    assert picture.shape[1] == 2 * 600 + GAP
    title_height = picture.shape[0] - 480
    assert 30 <= title_height <= 60
    for panel in (picture[:, :600], picture[:, 600 + GAP :]):
        title, drawing = panel[:title_height], panel[title_height:]
        assert (drawing == 128).all()  # nothing to draw: the enlarged image itself
        # Black title text on white, tall enough to read.
        rows = np.nonzero((title < 100).all(axis=2).any(axis=1))[0]
        assert rows.size and rows.max() - rows.min() >= 12


def test_boxes_and_labels_land_on_the_enlarged_objects(metadata):
    image = np.full((160, 160, 3), 128, dtype=np.uint8)
    ground_truth = [{"bbox": [40, 40, 60, 60], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]
    detections = _detections([[40, 40, 100, 100], [110, 110, 150, 150]], [0.9, 0.2], [0, 1])
    drawn = draw_ground_truth_and_detections(
        image, ground_truth, detections, metadata, threshold=0.3
    )
    blank = draw_ground_truth_and_detections(image, [], NOTHING, metadata, threshold=0.3)
    title_height = drawn.shape[0] - 480
    changed = (np.abs(drawn.astype(int) - blank.astype(int)).sum(axis=2) > 30)[title_height:]

    for panel in (changed[:, :480], changed[:, 480 + GAP :]):
        # The box of (40, 40)-(100, 100) is drawn at (120, 120)-(300, 300) of the enlarged image.
        ys, xs = np.nonzero(panel)
        assert abs(ys.min() - 120) <= 4 and abs(ys.max() - 300) <= 4
        assert abs(xs.min() - 120) <= 4 and abs(xs.max() - 300) <= 4
        left_edge = panel[130:290, 116:125].any(axis=1)
        assert left_edge.all()
        # The label sits on the box's top-left corner, a small part of the box, in text large enough
        # to read.
        label = panel[125:295, 125:295]
        ys, xs = np.nonzero(label)
        assert ys.min() <= 2 and xs.min() <= 2
        assert 10 <= ys.max() - ys.min() + 1 <= 40 and xs.max() - xs.min() + 1 >= 40
        assert label.mean() < 0.1
    # The detection under the threshold (score 0.2 at (110, 110)-(150, 150)) is not drawn.
    assert not changed[:, 480 + GAP :][320:460, 320:460].any()
    # The detection's label (class and score) is wider than the ground truth's (class only).
    gt_label = np.nonzero(changed[125:145, 125:295].any(axis=0))[0]
    det_label = np.nonzero(changed[125:145, 480 + GAP + 125 : 480 + GAP + 295].any(axis=0))[0]
    assert det_label.max() > gt_label.max() + 10


@pytest.mark.parametrize("num_images,columns,rows", [(1, 1, 1), (5, 2, 3), (24, 4, 6)])
def test_contact_sheet_holds_every_picture_on_a_grid(num_images, columns, rows):
    pictures = [np.full((100, 200, 3), i, dtype=np.uint8) for i in range(num_images)]
    sheet = contact_sheet(pictures, max_width=4000)
    assert sheet.shape == (
        rows * 100 + (rows + 1) * SHEET_GAP,
        columns * 200 + (columns + 1) * SHEET_GAP,
        3,
    )
    for i, picture in enumerate(pictures):
        y = SHEET_GAP + (i // columns) * (100 + SHEET_GAP)
        x = SHEET_GAP + (i % columns) * (200 + SHEET_GAP)
        np.testing.assert_array_equal(sheet[y : y + 100, x : x + 200], picture)
    # Cells without a picture stay white.
    assert (sheet[-SHEET_GAP - 100 :, -SHEET_GAP - 200 :] == 255).all() == (
        num_images % columns != 0
    )


def test_contact_sheet_of_many_large_pictures_stays_within_the_width_bound():
    pictures = [np.zeros((514, 968, 3), dtype=np.uint8)] * 24
    sheet = contact_sheet(pictures, max_width=3200)
    assert sheet.shape[1] <= 3200
    # Shrunk evenly: still four pictures per row, aspect kept within a pixel.
    tile_w = (sheet.shape[1] - 5 * SHEET_GAP) // 4
    tile_h = (sheet.shape[0] - 7 * SHEET_GAP) // 6
    assert abs(tile_h - tile_w * 514 / 968) <= 1
