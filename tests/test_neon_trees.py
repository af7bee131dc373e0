"""
The NEON tree-crown dataset: the tiling, the split of REAL_DATA.md, the per-site subsets, and the
fetch step's checks, on images and wheels the test makes (no network).
"""

import hashlib
import json
import zipfile

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from dsla.data.neon_trees import (
    DEEPFOREST_SHA256,
    RAW_FILES,
    load_neon_trees,
    register_neon_trees,
    tile_annotations,
    tile_grid,
)
from dsla.utils.file_io import unpack_checked

from conftest import write_voc_xml

LARGE, SECOND = "2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop"
SIZES = {LARGE: (2299, 2472), SECOND: (1249, 1035), "OSBS_029": (400, 400), "SOAP_061": (400, 400)}


def test_tiles_start_at_the_top_left_and_keep_border_tiles_of_half_a_tile_or_more():
    tiles = tile_grid(2299, 2472, 400)
    assert len(tiles) == 36  # 6 columns (the last 299 wide) x 6 rows (72 pixels left over)
    assert tiles[5] == (2000, 0, 2299, 400) and tiles[-1] == (2000, 2000, 2299, 2400)
    tiles = tile_grid(1249, 1035, 400)
    assert len(tiles) == 9 and tiles[-1] == (800, 800, 1200, 1035)
    assert tile_grid(400, 400, 200) == [
        (0, 0, 200, 200),
        (200, 0, 400, 200),
        (0, 200, 200, 400),
        (200, 200, 400, 400),
    ]


def test_a_box_goes_to_each_tile_holding_at_least_half_of_it_clipped():
    boxes = np.array(
        [
            [390.0, 10.0, 410.0, 30.0],  # exactly half in each of two tiles
            [385.0, 50.0, 405.0, 70.0],  # three quarters left
            [10.0, 10.0, 30.0, 30.0],  # inside the left tile
        ]
    )
    left = tile_annotations(boxes, (0, 0, 400, 400))
    right = tile_annotations(boxes, (400, 0, 800, 400))
    assert left.tolist() == [[390, 10, 400, 30], [385, 50, 400, 70], [10, 10, 30, 30]]
    assert right.tolist() == [[0, 10, 10, 30]]  # in the right tile's coordinates


@pytest.fixture
def raw_root(tmp_path):
    """A raw/ folder with the four source images (their real sizes, flat colour) and a few boxes."""
    raw = tmp_path / "raw"
    raw.mkdir()
    objects = {
        # One box per 400x400 tile of the top row; one in the bottom row of the larger image (val).
        LARGE: [("Tree", x + 100, 100, x + 150, 160) for x in range(0, 2400, 400)]
        + [("Tree", 100, 2100, 140, 2140)],
        SECOND: [("Tree", 10, 10, 60, 60)],
        # Top half (train) and bottom half (val) of the 400x400 images, SOAP with its two labels.
        "OSBS_029": [("Tree", 20, 20, 50, 50), ("Tree", 220, 220, 260, 260)],
        "SOAP_061": [("Dead", 20, 20, 50, 50), ("Alive", 20, 300, 50, 330)],
    }
    for stem, (width, height) in SIZES.items():
        cv2.imwrite(str(raw / f"{stem}.png"), np.full((height, width, 3), 90, np.uint8))
        write_voc_xml(raw / f"{stem}.xml", f"{stem}.tif", (width, height), objects[stem])
    return tmp_path


def test_split_of_real_data_md_tiles_sites_and_classes(raw_root):
    train = load_neon_trees(str(raw_root), "train")
    val = load_neon_trees(str(raw_root), "val")
    assert len(train) == 43 and len(val) == 10
    assert sum(len(d["annotations"]) for d in train) == 6 + 1 + 1 + 1
    assert sum(len(d["annotations"]) for d in val) == 1 + 1 + 1
    assert sorted({d["site"] for d in val}) == ["OSBS", "SOAP", "YELL"]
    assert [d["site"] for d in val].count("YELL") == 6
    assert {a["category_id"] for d in train + val for a in d["annotations"]} == {0}
    bottom = [d for d in val if d["site"] == "YELL" and d["annotations"]]
    assert len(bottom) == 1 and bottom[0]["annotations"][0]["bbox"] == [100, 100, 140, 140]
    # The tiles are image files of the tile's size.
    image = cv2.imread(val[0]["file_name"])
    assert image.shape[:2] == (val[0]["height"], val[0]["width"])
    assert json.load(open(raw_root / "tiles" / "manifest.json"))["tiles"] == 400
    assert len(load_neon_trees(str(raw_root), "val", sites=("SOAP",))) == 2


def test_registered_names_and_a_missing_download_says_what_to_run(raw_root, tmp_path_factory):
    try:
        register_neon_trees(str(raw_root))
        assert MetadataCatalog.get("neon_trees_val").thing_classes == ["Tree"]
        assert MetadataCatalog.get("neon_trees_val").evaluator_type == "coco"
        assert len(DatasetCatalog.get("neon_trees_val_osbs")) == 2
        empty = tmp_path_factory.mktemp("empty")
        register_neon_trees(str(empty))
        with pytest.raises(FileNotFoundError, match="make trees"):
            DatasetCatalog.get("neon_trees_train")
    finally:
        register_neon_trees()


def _wheel(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unpacking_checks_the_wheel_and_takes_only_the_members_asked_for(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    sha = _wheel(wheel, {"pkg/data/a.xml": b"<a/>", "pkg/code.py": b"import os"})
    unpack_checked(str(wheel), sha, {"pkg/data/a.xml": str(tmp_path / "out" / "a.xml")})
    assert (tmp_path / "out" / "a.xml").read_bytes() == b"<a/>"
    assert not (tmp_path / "out" / "code.py").exists()
    with pytest.raises(RuntimeError, match="sha256"):
        unpack_checked(str(wheel), "0" * 64, {"pkg/data/a.xml": str(tmp_path / "b.xml")})
    with pytest.raises(RuntimeError, match="has no pkg/missing"):
        unpack_checked(str(wheel), sha, {"pkg/missing": str(tmp_path / "c")})


def test_the_fetch_takes_the_four_images_and_their_annotations():
    assert len(DEEPFOREST_SHA256) == 64
    assert sorted(f.rsplit("/", 1)[1] for f in RAW_FILES) == sorted(
        f"{stem}.{ext}" for stem in SIZES for ext in ("png", "xml")
    )
