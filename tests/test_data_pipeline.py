"""Data loading errors that name the image, the class-count check, and --register-coco."""

import os

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from dsla.data import DSLADatasetMapper, check_num_classes, dataset_classes, register_coco_datasets

from conftest import load_config, write_coco_dataset

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"


@pytest.fixture
def registered(tmp_path, request):
    name = f"tiny_{request.node.name}"
    json_path, image_root = write_coco_dataset(str(tmp_path), num_images=3, num_classes=3)
    register_coco_datasets([(name, json_path, image_root)])
    yield name, json_path, image_root
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_register_coco_is_idempotent_and_refuses_a_taken_name(registered, tmp_path):
    name, json_path, image_root = registered
    register_coco_datasets([(name, json_path, image_root)])
    assert len(DatasetCatalog.get(name)) == 3
    with pytest.raises(ValueError, match="already registered"):
        register_coco_datasets([(name, str(tmp_path / "other.json"), image_root)])


def test_class_names_come_from_the_json_before_the_dataset_is_loaded(registered):
    name, _, _ = registered
    assert dataset_classes(name) == ["class1", "class2", "class3"]


def test_class_count_mismatch_stops_with_both_numbers_and_the_fix(registered):
    name, _, _ = registered
    cfg = load_config(QUICKSTART, ["DATASETS.TRAIN", f"('{name}',)"])
    with pytest.raises(ValueError) as err:
        check_num_classes(cfg)
    message = str(err.value)
    assert "MODEL.DSLA.NUM_CLASSES is 4" in message and "has 3 categories" in message
    assert "MODEL.DSLA.NUM_CLASSES 3" in message
    cfg.MODEL.DSLA.NUM_CLASSES = 3
    check_num_classes(cfg)


def test_unreadable_image_error_names_the_file(registered):
    name, _, image_root = registered
    record = DatasetCatalog.get(name)[1]
    with open(record["file_name"], "r+b") as f:
        f.truncate(60)  # keeps the PNG header, loses the pixel data
    mapper = DSLADatasetMapper(load_config(QUICKSTART), is_train=True)
    with pytest.raises(OSError) as err:
        mapper(record)
    assert os.path.basename(record["file_name"]) in str(err.value)
    assert f"image_id {record['image_id']}" in str(err.value)


def test_non_finite_box_error_names_the_image_and_box(registered):
    name, _, _ = registered
    record = DatasetCatalog.get(name)[0]
    record["annotations"][1]["bbox"] = [1.0, float("inf"), 5.0, 5.0]
    mapper = DSLADatasetMapper(load_config(QUICKSTART), is_train=True)
    with pytest.raises(ValueError, match=r"annotation 1 has a non-finite box \[1.0, inf"):
        mapper(record)


def test_mapper_output_matches_detectron2_for_valid_records(registered):
    name, _, _ = registered
    record = DatasetCatalog.get(name)[0]
    cfg = load_config(QUICKSTART, ["INPUT.RANDOM_FLIP", "none"])
    out = DSLADatasetMapper(cfg, is_train=True)(record)
    assert out["image"].shape[0] == 3
    assert len(out["instances"]) == len(record["annotations"])
    assert np.isfinite(out["instances"].gt_boxes.tensor.numpy()).all()


def test_annotation_without_category_id_is_named(registered):
    name, _, _ = registered
    record = DatasetCatalog.get(name)[0]
    del record["annotations"][0]["category_id"]
    mapper = DSLADatasetMapper(load_config(QUICKSTART), is_train=True)
    with pytest.raises(ValueError, match="annotation 0 has no category_id"):
        mapper(record)
