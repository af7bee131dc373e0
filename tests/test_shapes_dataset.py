import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from dsla.data import shapes, synthetic
from dsla.data.shapes import (
    SHAPES_CLASSES,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    register_shapes_datasets,
    render_shapes_image,
)

NUM_IMAGES = 20


def _generate(root, seed=3, num_images=NUM_IMAGES, **kwargs):
    return generate_shapes_dataset(
        str(root), "val", num_images, seed, show_progress=False, **kwargs
    )


def _read_rgb(path):
    return cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1]


def _image_bytes(root):
    image_dir = os.path.join(root, "val")
    out = {}
    for name in sorted(os.listdir(image_dir)):
        with open(os.path.join(image_dir, name), "rb") as f:
            out[name] = f.read()
    return out


@pytest.fixture(scope="module")
def textured_json(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("textured"))


@pytest.fixture(scope="module")
def flat_json(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("flat"), textured=False)


@pytest.fixture
def restore_registration():
    yield
    register_shapes_datasets()


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path, textured_json):
    json_a = _generate(tmp_path / "a")
    json_b = _generate(tmp_path / "b", seed=4)
    with open(textured_json, "rb") as f0, open(json_a, "rb") as fa, open(json_b, "rb") as fb:
        ref, same, other = f0.read(), fa.read(), fb.read()
    assert same == ref
    assert other != ref

    ref_images = _image_bytes(os.path.dirname(os.path.dirname(textured_json)))
    assert len(ref_images) == NUM_IMAGES
    assert _image_bytes(str(tmp_path / "a")) == ref_images
    other_images = _image_bytes(str(tmp_path / "b"))
    assert all(other_images[name] != data for name, data in ref_images.items())


def test_annotations_are_valid_coco(textured_json):
    with open(textured_json) as f:
        data = json.load(f)
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
    assert [c["name"] for c in data["categories"]] == list(SHAPES_CLASSES)
    assert len(data["images"]) == NUM_IMAGES
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])

    coco = COCO(textured_json)
    root = os.path.dirname(os.path.dirname(textured_json))
    for image_id, info in coco.imgs.items():
        anns = coco.imgToAnns[image_id]
        assert 1 <= len(anns) <= 8
        assert _read_rgb(os.path.join(root, "val", info["file_name"])).shape == (
            info["height"],
            info["width"],
            3,
        )
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= info["width"] and y + h <= info["height"]
            assert ann["category_id"] in coco.cats
            assert ann["iscrowd"] == 0
            rle = coco.annToRLE(ann)
            assert ann["area"] == float(mask_util.area(rle)) > 0
            assert mask_util.toBbox(rle).tolist() == ann["bbox"]


def test_boxes_are_tight_boxes_of_the_drawn_pixels(textured_json, flat_json):
    # Textures do not change the geometry, so the flat-coloured images, where every object has its
    # own colour, check the annotations of the textured ones pixel by pixel.
    with open(textured_json) as f_textured, open(flat_json) as f_flat:
        assert json.load(f_textured) == json.load(f_flat)

    coco = COCO(flat_json)
    root = os.path.dirname(os.path.dirname(flat_json))
    for image_id, info in coco.imgs.items():
        image = _read_rgb(os.path.join(root, "val", info["file_name"]))
        drawn = np.zeros(image.shape[:2], dtype=bool)
        for ann in coco.imgToAnns[image_id]:
            mask = coco.annToMask(ann).astype(bool)
            colours = np.unique(image[mask], axis=0)
            assert len(colours) == 1
            same_colour = (image == colours[0]).all(axis=-1)
            np.testing.assert_array_equal(same_colour, mask)
            ys, xs = np.nonzero(same_colour)
            x0, y0 = xs.min(), ys.min()
            assert ann["bbox"] == [x0, y0, xs.max() - x0 + 1, ys.max() - y0 + 1]
            drawn |= mask
        # Objects dropped for occlusion must not be drawn: everything else is plain background.
        assert len(np.unique(image[~drawn], axis=0)) == 1


def test_textured_objects_are_painted_exactly_over_their_visible_masks(monkeypatch):
    # Replace background and textures by grey levels 40 apart, far above the pixel noise, so that
    # each pixel tells which object (or the background, level 0) was painted there.
    painted = []

    def level_texture(rng, colour, xx, yy, size):
        painted.append(None)
        return np.full(xx.shape + (3,), 40.0 * len(painted))

    monkeypatch.setattr(shapes, "background", lambda rng, xx, yy: np.zeros(xx.shape + (3,)))
    monkeypatch.setattr(synthetic, "texture", level_texture)
    for i in range(10):
        painted.clear()
        image, objects = render_shapes_image(np.random.default_rng([13, i]), max_objects=6)
        labels = np.rint(image[:, :, 0] / 40.0).astype(int)
        expected = np.zeros_like(labels)
        for k, obj in enumerate(objects):
            expected[obj["mask"]] = k + 1
        np.testing.assert_array_equal(labels, expected)


def test_object_sizes_span_small_to_most_of_the_image():
    sides, areas = [], []
    for i in range(80):
        _, objects = render_shapes_image(np.random.default_rng([7, i]))
        for obj in objects:
            ys, xs = np.nonzero(obj["mask"])
            sides.append(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
            areas.append(obj["mask"].sum())
    sides, areas = np.array(sides), np.array(areas)
    assert sides.min() < 16 and sides.max() > 100
    # COCO's small, medium and large area ranges are all present.
    assert (
        (areas < 32**2).any()
        and ((areas >= 32**2) & (areas < 96**2)).any()
        and (areas >= 96**2).any()
    )


def test_objects_occlude_each_other_but_stay_mostly_visible():
    num_occluded = 0
    for i in range(40):
        _, objects = render_shapes_image(np.random.default_rng([11, i]), min_visible=0.4)
        union = np.zeros((160, 160), dtype=bool)
        for obj in objects:
            visible, full = obj["mask"], obj["full_mask"]
            assert not (visible & ~full).any()
            assert visible.sum() >= 0.4 * full.sum()
            num_occluded += visible.sum() < full.sum()
            assert not (union & visible).any()
            union |= visible
    assert num_occluded >= 10


def test_cache_is_reused_and_regenerated_when_broken(tmp_path, monkeypatch):
    root = str(tmp_path)
    json_file = ensure_shapes_dataset(root, "val", 10, seed=5)
    with open(json_file, "rb") as f:
        ref_json = f.read()
    ref_images = _image_bytes(root)

    generated = []
    real_generate = synthetic.generate_split
    monkeypatch.setattr(
        synthetic, "generate_split", lambda *a, **k: generated.append(a) or real_generate(*a, **k)
    )
    ensure_shapes_dataset(root, "val", 10, seed=5)
    assert generated == []

    os.remove(os.path.join(root, "val", "000003.png"))
    ensure_shapes_dataset(root, "val", 10, seed=5)
    assert len(generated) == 1 and _image_bytes(root) == ref_images

    with open(json_file, "w") as f:
        f.write('{"images": [')
    ensure_shapes_dataset(root, "val", 10, seed=5)
    assert len(generated) == 2
    with open(json_file, "rb") as f:
        assert f.read() == ref_json

    ensure_shapes_dataset(root, "val", 12, seed=5)
    assert len(generated) == 3
    assert len(COCO(json_file).imgs) == 12


def test_registration_is_lazy_idempotent_and_loads_records(tmp_path, restore_registration):
    register_shapes_datasets(root=str(tmp_path), num_train=4, num_val=6, image_size=96)
    register_shapes_datasets(root=str(tmp_path), num_train=4, num_val=6, image_size=96)
    for name in ("shapes_train", "shapes_val"):
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(SHAPES_CLASSES)
        assert meta.evaluator_type == "coco"
        assert meta.json_file.startswith(str(tmp_path))
    assert not os.path.exists(MetadataCatalog.get("shapes_val").json_file)

    records = DatasetCatalog.get("shapes_val")
    assert os.path.isfile(MetadataCatalog.get("shapes_val").json_file)
    assert not os.path.exists(os.path.join(str(tmp_path), "train"))
    assert len(records) == 6
    for record in records:
        assert os.path.isfile(record["file_name"])
        assert (record["height"], record["width"]) == (96, 96)
        assert "image_id" in record and len(record["annotations"]) >= 1
        for ann in record["annotations"]:
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS
            assert 0 <= ann["category_id"] < len(SHAPES_CLASSES)
            assert len(ann["bbox"]) == 4
    assert MetadataCatalog.get("shapes_val").thing_dataset_id_to_contiguous_id == {
        1: 0,
        2: 1,
        3: 2,
        4: 3,
    }


def test_registration_reads_environment_overrides(tmp_path, monkeypatch, restore_registration):
    monkeypatch.setenv("DSLA_SHAPES_ROOT", str(tmp_path / "env_root"))
    monkeypatch.setenv("DSLA_SHAPES_NUM_VAL", "3")
    monkeypatch.setenv("DSLA_SHAPES_IMAGE_SIZE", "64x80")
    register_shapes_datasets()
    records = DatasetCatalog.get("shapes_val")
    assert len(records) == 3
    assert (records[0]["height"], records[0]["width"]) == (64, 80)
    assert records[0]["file_name"].startswith(str(tmp_path / "env_root"))


def test_command_line_writes_a_split(tmp_path):
    json_file = shapes.main(
        ["--root", str(tmp_path), "--split", "mini", "--num-images", "3", "--seed", "9"]
    )
    assert len(COCO(json_file).imgs) == 3
    assert sorted(os.listdir(tmp_path / "mini")) == ["000000.png", "000001.png", "000002.png"]
