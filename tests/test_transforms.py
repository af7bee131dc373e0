"""Overhead-imagery augmentations: exact quarter turns of images and boxes, and their config."""

import numpy as np
import pytest

from detectron2.data import transforms as T

from dsla.data import DSLADatasetMapper
from dsla.data.transforms import RandomRotate90, Rotate90Transform

from conftest import load_config


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_a_quarter_turn_moves_boxes_with_the_pixels(k):
    image = np.zeros((40, 70, 3), np.uint8)
    image[5:15, 20:50] = 255  # rows 5-14, columns 20-49: box (20, 5, 50, 15)
    transform = Rotate90Transform(k, 40, 70)
    rotated = transform.apply_image(image)
    assert rotated.shape[:2] == ((70, 40) if k % 2 else (40, 70))
    ((x0, y0, x1, y1),) = transform.apply_box(np.array([[20.0, 5.0, 50.0, 15.0]]))
    ys, xs = np.nonzero(rotated[:, :, 0])
    assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    back = transform.inverse()
    assert np.array_equal(back.apply_image(rotated), image)


def test_the_config_keys_add_the_augmentations_to_training_only():
    cfg = load_config(
        "configs/DSLA/dsla_quickstart_shapes.yaml",
        [
            "INPUT.VERTICAL_FLIP",
            "True",
            "INPUT.RANDOM_ROTATE_90",
            "True",
            "INPUT.COLOR_JITTER",
            "0.2",
        ],
    )
    train = DSLADatasetMapper(cfg, is_train=True).augmentations.augs
    kinds = [type(a) for a in train]
    assert kinds[:2] == [T.ResizeShortestEdge, T.RandomFlip]
    assert kinds[2:] == [
        T.RandomFlip,
        RandomRotate90,
        T.RandomBrightness,
        T.RandomContrast,
        T.RandomSaturation,
    ]
    assert train[2].vertical and not train[2].horizontal
    assert (train[4].intensity_min, train[4].intensity_max) == (0.8, 1.2)
    test = DSLADatasetMapper(cfg, is_train=False).augmentations.augs
    assert [type(a) for a in test] == [T.ResizeShortestEdge]
    default = DSLADatasetMapper(load_config("configs/DSLA/dsla_quickstart_shapes.yaml"), True)
    assert [type(a) for a in default.augmentations.augs] == [T.ResizeShortestEdge, T.RandomFlip]
