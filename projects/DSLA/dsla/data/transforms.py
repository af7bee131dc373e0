"""Augmentations for overhead imagery, where up, down, left and right mean nothing."""

import numpy as np
from fvcore.transforms.transform import Transform

from detectron2.data import transforms as T

__all__ = ["RandomRotate90", "Rotate90Transform", "overhead_augmentations"]


class Rotate90Transform(Transform):
    """Rotate an image of ``height x width`` by ``k`` quarter turns counter-clockwise, exactly."""

    def __init__(self, k: int, height: int, width: int):
        super().__init__()
        self._set_attributes({"k": k % 4, "height": height, "width": width})

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """(x, y) in pixels of the input to (x, y) of the rotated image, edges onto edges."""
        x, y = coords[:, 0].copy(), coords[:, 1].copy()
        w, h = self.width, self.height
        if self.k == 1:  # counter-clockwise: the right edge goes to the top
            coords[:, 0], coords[:, 1] = y, w - x
        elif self.k == 2:
            coords[:, 0], coords[:, 1] = w - x, h - y
        elif self.k == 3:
            coords[:, 0], coords[:, 1] = h - y, x
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def inverse(self) -> Transform:
        rotated = (self.width, self.height) if self.k % 2 else (self.height, self.width)
        return Rotate90Transform(-self.k, *rotated)


class RandomRotate90(T.Augmentation):
    """A rotation by 0, 90, 180 or 270 degrees, each equally likely."""

    def __init__(self):
        super().__init__()

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        return Rotate90Transform(int(np.random.randint(4)), h, w)


def overhead_augmentations(
    vertical_flip: bool, rotate_90: bool, color_jitter: float
) -> "list[T.Augmentation]":
    """
    What ``INPUT.VERTICAL_FLIP``, ``INPUT.RANDOM_ROTATE_90`` and ``INPUT.COLOR_JITTER`` add to
    detectron2's training augmentations (resize, horizontal flip): a vertical flip with probability
    0.5, a random quarter turn, and brightness, contrast and saturation each scaled by a factor in
    ``[1 - color_jitter, 1 + color_jitter]``.
    """
    augmentations = []
    if vertical_flip:
        augmentations.append(T.RandomFlip(horizontal=False, vertical=True))
    if rotate_90:
        augmentations.append(RandomRotate90())
    if color_jitter > 0:
        low, high = 1 - color_jitter, 1 + color_jitter
        augmentations += [
            T.RandomBrightness(low, high),
            T.RandomContrast(low, high),
            T.RandomSaturation(low, high),
        ]
    return augmentations
