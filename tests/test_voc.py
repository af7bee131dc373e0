"""Pascal VOC folders as detectron2 datasets: both layouts, split files, errors, --register-voc."""

import os

import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from dsla.data.voc import load_voc_folder, parse_voc_xml, register_voc_datasets

from conftest import write_voc_xml


def _image(path, size=(64, 48)):
    Image.new("RGB", size, (10, 120, 30)).save(path)


def test_a_flat_folder_of_images_and_xml_files_loads_with_voc_coordinates(tmp_path):
    _image(tmp_path / "a.png")
    write_voc_xml(
        tmp_path / "a.xml", "a.png", (64, 48), [("tree", 1, 1, 10, 20), ("car", 5, 6, 64, 48)]
    )
    # The XML names a .tif, as DeepForest's do; the .png beside it is the image.
    _image(tmp_path / "b.png")
    write_voc_xml(tmp_path / "b.xml", "b.tif", (64, 48), [("car", 11, 11, 20, 30)])
    dicts = load_voc_folder(str(tmp_path), ["car", "tree"])
    assert [d["image_id"] for d in dicts] == ["a", "b"]
    assert dicts[1]["file_name"] == str(tmp_path / "b.png")
    a = dicts[0]
    assert (a["height"], a["width"]) == (48, 64)
    # 1-based inclusive VOC pixels: (1, 1, 10, 20) covers [0, 10) x [0, 20).
    assert [x["bbox"] for x in a["annotations"]] == [[0.0, 0.0, 10.0, 20.0], [4.0, 5.0, 64.0, 48.0]]
    assert [x["category_id"] for x in a["annotations"]] == [1, 0]
    assert all(x["bbox_mode"] == BoxMode.XYXY_ABS for x in a["annotations"])


def test_a_voc_layout_with_a_split_file_and_zero_based_option(tmp_path):
    for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(tmp_path / d)
    for stem in ("x1", "x2"):
        _image(tmp_path / "JPEGImages" / f"{stem}.jpg")
        write_voc_xml(
            tmp_path / "Annotations" / f"{stem}.xml", f"{stem}.jpg", (64, 48), [("a", 3, 3, 9, 9)]
        )
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("x2\n")
    assert [d["image_id"] for d in load_voc_folder(str(tmp_path), ["a"], split="val")] == ["x2"]
    assert len(load_voc_folder(str(tmp_path), ["a"])) == 2
    record = parse_voc_xml(str(tmp_path / "Annotations" / "x1.xml"), ["a"], one_based=False)
    assert record["annotations"][0]["bbox"] == [3.0, 3.0, 9.0, 9.0]


@pytest.mark.parametrize(
    "objects, message",
    [
        ([("dog", 1, 1, 5, 5)], "class 'dog'"),
        ([("a", 9, 1, 5, 5)], "non-positive size"),
        ([("a", 1, 1, 500, 5)], "outside the image"),
    ],
)
def test_bad_annotations_name_the_file_and_object(tmp_path, objects, message):
    _image(tmp_path / "a.png")
    write_voc_xml(tmp_path / "a.xml", "a.png", (64, 48), [("a", 2, 2, 6, 6), *objects])
    with pytest.raises(ValueError, match=message) as error:
        load_voc_folder(str(tmp_path), ["a"])
    assert "a.xml: object 1" in str(error.value)


def test_a_missing_image_or_folder_is_named(tmp_path):
    write_voc_xml(tmp_path / "a.xml", "a.png", (64, 48), [])
    with pytest.raises(FileNotFoundError, match="a.xml: no image"):
        load_voc_folder(str(tmp_path), ["a"])
    with pytest.raises(FileNotFoundError, match="no folder"):
        load_voc_folder(str(tmp_path / "nowhere"), ["a"])


def test_register_voc_registers_a_coco_evaluated_dataset_from_a_folder_or_split_file(tmp_path):
    for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(tmp_path / d)
    _image(tmp_path / "JPEGImages" / "x.jpg")
    write_voc_xml(tmp_path / "Annotations" / "x.xml", "x.jpg", (64, 48), [("b", 2, 2, 9, 9)])
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("x\n")
    split_file = str(tmp_path / "ImageSets" / "Main" / "train.txt")
    try:
        register_voc_datasets(
            [("voc_test_all", str(tmp_path), "a, b"), ("voc_test_train", split_file, "a,b")]
        )
        assert MetadataCatalog.get("voc_test_all").thing_classes == ["a", "b"]
        assert MetadataCatalog.get("voc_test_all").evaluator_type == "coco"
        (record,) = DatasetCatalog.get("voc_test_train")
        assert record["annotations"][0]["category_id"] == 1
        register_voc_datasets([("voc_test_all", str(tmp_path), "a,b")])  # the same again: no-op
        with pytest.raises(ValueError, match="already registered"):
            register_voc_datasets([("voc_test_all", str(tmp_path), "b")])
        with pytest.raises(ValueError, match="not a split file"):
            register_voc_datasets([("voc_test_bad", str(tmp_path / "val.txt"), "a")])
    finally:
        for name in ("voc_test_all", "voc_test_train"):
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
