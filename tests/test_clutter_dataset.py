import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog

from dsla.data import clutter, synthetic
from dsla.data.clutter import (
    CLUTTER,
    CLUTTER_CLASSES,
    register_clutter_datasets,
    render_clutter_image,
)
from dsla.data.synthetic import ensure_split, generate_split

NUM_IMAGES = 8
HEIGHT, WIDTH = 256, 320


def _generate(root, seed=3, **kwargs):
    return generate_split(
        CLUTTER, str(root), "val", NUM_IMAGES, seed, show_progress=False, **kwargs
    )


def _files(json_file):
    """Bytes of the json and the images of a split."""
    root = os.path.dirname(os.path.dirname(json_file))
    paths = [json_file] + [
        os.path.join(root, "val", name) for name in sorted(os.listdir(os.path.join(root, "val")))
    ]
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def _box_of(mask):
    ys, xs = np.nonzero(mask)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]


@pytest.fixture(scope="module")
def val_json(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("clutter"))


@pytest.fixture(scope="module")
def rendered():
    """Objects (distractors included) of 40 default images: a few hundred annotations."""
    return [render_clutter_image(np.random.default_rng([7, i]))[1] for i in range(40)]


@pytest.fixture
def restore_registration():
    yield
    register_clutter_datasets()


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path, val_json):
    ref = _files(val_json)
    assert len(ref) == NUM_IMAGES + 1
    assert _files(_generate(tmp_path / "a")) == ref
    assert all(a != b for a, b in zip(_files(_generate(tmp_path / "b", seed=4)), ref))


def test_annotations_are_valid_coco_with_two_classes(val_json):
    with open(val_json) as f:
        data = json.load(f)
    assert [c["id"] for c in data["categories"]] == [1, 2]
    assert [c["name"] for c in data["categories"]] == list(CLUTTER_CLASSES)
    coco = COCO(val_json)
    root = os.path.dirname(os.path.dirname(val_json))
    for image_id, info in coco.imgs.items():
        assert (info["height"], info["width"]) == (HEIGHT, WIDTH)
        assert cv2.imread(os.path.join(root, "val", info["file_name"])).shape == (HEIGHT, WIDTH, 3)
        for ann in coco.imgToAnns[image_id]:
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= WIDTH and y + h <= HEIGHT
            assert ann["category_id"] in (1, 2)
            assert ann["iscrowd"] == 0
            rle = coco.annToRLE(ann)
            assert ann["area"] == float(mask_util.area(rle)) > 0
            assert mask_util.toBbox(rle).tolist() == ann["bbox"]


def test_annotations_are_the_visible_objects_and_never_the_distractors(val_json):
    coco = COCO(val_json)
    num_distractor_pixels = 0
    for index in range(NUM_IMAGES):
        _, objects = render_clutter_image(np.random.default_rng([3, index]))
        anns = coco.imgToAnns[index + 1]
        annotated = [obj for obj in objects if obj["category"] is not None]
        assert [a["category_id"] for a in anns] == [obj["category"] + 1 for obj in annotated]
        union = np.zeros((HEIGHT, WIDTH), dtype=bool)
        for ann, obj in zip(anns, annotated):
            mask = coco.annToMask(ann).astype(bool)
            np.testing.assert_array_equal(mask, obj["mask"])
            assert ann["bbox"] == _box_of(obj["mask"])
            union |= mask
        for obj in objects:
            if obj["category"] is None:
                assert not (obj["mask"] & union).any()
                num_distractor_pixels += obj["mask"].sum()
    assert num_distractor_pixels > 1000


def test_objects_are_painted_exactly_over_their_visible_masks(monkeypatch):
    # Each painted layer gets its own colour code, far apart compared to the pixel noise, so that
    # each pixel tells which object or distractor (or the background, code 0) was painted there.
    painted = []

    def code_texture(rng, colour, xx, yy, size):
        painted.append(None)
        k = len(painted)
        return np.broadcast_to(
            np.array([k % 6, k // 6 % 6, k // 36], dtype=np.float32) * 40, xx.shape + (3,)
        )

    monkeypatch.setattr(
        clutter, "_clutter_background", lambda rng, xx, yy: np.zeros(xx.shape + (3,), np.float32)
    )
    monkeypatch.setattr(synthetic, "texture", code_texture)
    for i in range(6):
        painted.clear()
        image, objects = render_clutter_image(np.random.default_rng([13, i]))
        assert len(painted) == len(objects) < 216
        codes = np.rint(image / 40.0).astype(int)
        labels = codes[..., 0] + 6 * codes[..., 1] + 36 * codes[..., 2]
        expected = np.zeros_like(labels)
        for k, obj in enumerate(objects):
            expected[obj["mask"]] = k + 1
        np.testing.assert_array_equal(labels, expected)


def test_annotated_objects_are_mostly_visible_and_distractors_are_drawn(rendered):
    num_occluded = num_distractors = 0
    for objects in rendered:
        union = np.zeros((HEIGHT, WIDTH), dtype=bool)
        for obj in objects:
            visible, full = obj["mask"], obj["full_mask"]
            assert not (visible & ~full).any() and not (union & visible).any()
            union |= visible
            if obj["category"] is None:
                num_distractors += 1
                continue
            assert visible.sum() >= max(0.4 * full.sum(), 10)
            num_occluded += visible.sum() < full.sum()
    assert num_occluded >= 30
    assert num_distractors >= 2 * len(rendered)


def test_sizes_aspect_ratios_and_crowding_span_the_designed_ranges(rendered):
    boxes, categories, counts, num_touching = [], [], [], 0
    for objects in rendered:
        annotated = [obj for obj in objects if obj["category"] is not None]
        counts.append(len(annotated))
        for obj in annotated:
            boxes.append(_box_of(obj["mask"]))
            categories.append(obj["category"])
        # Crowding: objects of one class whose unoccluded shapes touch or overlap.
        grown = [
            cv2.dilate(obj["full_mask"].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            for obj in annotated
        ]
        num_touching += sum(
            a["category"] == b["category"] and (ga & b["full_mask"]).any()
            for i, (a, ga) in enumerate(zip(annotated, grown))
            for b in annotated[i + 1 :]
        )
    boxes = np.array(boxes)
    assert len(boxes) >= 250
    assert set(categories) == {0, 1}
    longer = boxes[:, 2:].max(axis=1)
    assert (longer <= 12).mean() > 0.1
    assert longer.max() >= 0.75 * HEIGHT
    aspect = boxes[:, 2] / boxes[:, 3]
    assert (aspect >= 4).sum() >= 3 and (aspect <= 1 / 4).sum() >= 3
    assert ((aspect >= 2) | (aspect <= 0.5)).mean() > 0.2
    areas = boxes[:, 2] * boxes[:, 3]
    assert (
        (areas < 32**2).any()
        and ((areas >= 32**2) & (areas < 96**2)).any()
        and (areas >= 96**2).any()
    )
    assert max(counts) >= 20 and min(counts) <= 5
    assert num_touching >= 50


def test_cache_is_reused_and_regenerated_when_arguments_change(tmp_path, monkeypatch):
    root = str(tmp_path)
    json_file = ensure_split(CLUTTER, root, "val", 3, seed=5)
    with open(json_file, "rb") as f:
        ref_json = f.read()
    generated = []
    real_generate = synthetic.generate_split
    monkeypatch.setattr(
        synthetic, "generate_split", lambda *a, **k: generated.append(k) or real_generate(*a, **k)
    )

    ensure_split(CLUTTER, root, "val", 3, seed=5)
    assert generated == []
    ensure_split(CLUTTER, root, "val", 3, seed=5, max_objects=4)
    assert generated == [{"max_objects": 4}]
    assert max(len(anns) for anns in COCO(json_file).imgToAnns.values()) <= 4
    ensure_split(CLUTTER, root, "val", 3, seed=5)
    assert len(generated) == 2
    with open(json_file, "rb") as f:
        assert f.read() == ref_json
    ensure_split(CLUTTER, root, "val", 3, seed=6)
    assert len(generated) == 3


def test_registration_reads_small_split_sizes_from_the_environment(
    tmp_path, monkeypatch, restore_registration
):
    assert {"clutter_train", "clutter_val"} <= set(DatasetCatalog.list())
    monkeypatch.setenv("DSLA_CLUTTER_ROOT", str(tmp_path / "env_root"))
    monkeypatch.setenv("DSLA_CLUTTER_NUM_TRAIN", "2")
    monkeypatch.setenv("DSLA_CLUTTER_NUM_VAL", "3")
    monkeypatch.setenv("DSLA_CLUTTER_IMAGE_SIZE", "96x128")
    register_clutter_datasets()
    for name in ("clutter_train", "clutter_val"):
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(CLUTTER_CLASSES)
        assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}
        assert meta.evaluator_type == "coco"
    assert not os.path.exists(tmp_path / "env_root")

    records = DatasetCatalog.get("clutter_val")
    assert len(records) == 3
    assert not os.path.exists(tmp_path / "env_root" / "train")
    assert len(DatasetCatalog.get("clutter_train")) == 2
    for record in records:
        assert record["file_name"].startswith(str(tmp_path / "env_root"))
        assert (record["height"], record["width"]) == (96, 128)
        assert all(0 <= ann["category_id"] < 2 for ann in record["annotations"])


def test_command_line_writes_a_split(tmp_path):
    json_file = clutter.main(
        ["--root", str(tmp_path), "--split", "mini", "--num-images", "2", "--seed", "9"]
    )
    assert len(COCO(json_file).imgs) == 2
    assert sorted(os.listdir(tmp_path / "mini")) == ["000000.png", "000001.png"]
