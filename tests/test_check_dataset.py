"""tools/check_dataset.py catches each kind of planted error."""

import json
import os
import subprocess
import sys

import pytest

from dsla.data.check import check_coco_dataset

from conftest import REPO_ROOT, write_coco_dataset


def _load(json_path):
    with open(json_path) as f:
        return json.load(f)


def _save(json_path, data):
    with open(json_path, "w") as f:
        json.dump(data, f)


@pytest.fixture
def dataset(tmp_path):
    return write_coco_dataset(str(tmp_path), num_images=4, size=(96, 128))


def test_clean_dataset_has_no_errors(dataset):
    report = check_coco_dataset(*dataset)
    assert report.ok and not report.warnings
    assert report.counts["images"] == 4 and report.counts["annotations"] == 8


def _plant(data, image_root):
    """One of each problem, each on its own annotation or image."""
    anns = data["annotations"]
    anns[0]["bbox"] = [100.0, 50.0, 60.0, 30.0]  # past the 128-wide image
    anns[1]["bbox"] = [10.0, 10.0, 0.0, 5.0]  # zero width
    anns[2]["category_id"] = 99
    anns[3]["bbox"] = [float("nan"), 1.0, 2.0, 3.0]
    anns[4]["image_id"] = 1234
    os.remove(os.path.join(image_root, data["images"][1]["file_name"]))
    with open(os.path.join(image_root, data["images"][2]["file_name"]), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    # An image without annotations, whose JSON width disagrees with its file.
    data["images"].append(
        {"id": 50, "file_name": data["images"][0]["file_name"], "height": 96, "width": 64}
    )


def test_each_planted_error_is_reported_with_its_ids(dataset):
    json_path, image_root = dataset
    data = _load(json_path)
    _plant(data, image_root)
    _save(json_path, data)
    report = check_coco_dataset(json_path, image_root)
    c = report.counts
    assert c["box_outside_image"] == 1 and c["empty_box"] == 1 and c["unknown_category"] == 1
    assert c["non_finite_box"] == 1 and c["unknown_image"] == 1
    assert c["missing_image"] == 1 and c["unreadable_image"] == 1 and c["size_mismatch"] == 1
    assert c["image_without_annotations"] == 1
    text = "\n".join(report.errors)
    assert f"annotation id {data['annotations'][2]['id']}" in text and "category id 99" in text
    assert data["images"][1]["file_name"] in text


def test_command_line_exits_nonzero_on_errors_and_prints_a_summary(dataset):
    json_path, image_root = dataset
    tool = os.path.join(REPO_ROOT, "tools", "check_dataset.py")
    ok = subprocess.run(
        [sys.executable, tool, json_path, image_root], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "0 errors" in ok.stdout

    data = _load(json_path)
    data["annotations"][0]["bbox"] = [0.0, 0.0, -3.0, 4.0]
    _save(json_path, data)
    bad = subprocess.run(
        [sys.executable, tool, json_path, image_root], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "ERROR:" in bad.stdout and "empty_box: 1" in bad.stdout


def test_unparsable_json_is_an_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    report = check_coco_dataset(str(path), str(tmp_path))
    assert not report.ok and report.counts["bad_json"] == 1
