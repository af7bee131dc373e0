"""
tools/trees_demo.py (make trees-demo) end to end on a stand-in for the NEON tiles: it trains the
real-images config for a few iterations, evaluates on the whole val split and per site, draws the
tiles and writes the summary.
"""

import json

import cv2
import numpy as np
import pytest

from dsla.data import register_neon_trees
from tools import trees_demo

from conftest import write_voc_xml

SIZES = {
    "2019_YELL_2_528000_4978000_image_crop2": (2299, 2472),
    "2019_YELL_2_541000_4977000_image_crop": (1249, 1035),
    "OSBS_029": (400, 400),
    "SOAP_061": (400, 400),
}


def _raw(root):
    raw = root / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for stem, (width, height) in SIZES.items():
        image = np.full((height, width, 3), 60, np.uint8)
        objects = []
        for _ in range(max(2, width * height // 40000)):
            x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
            image[y : y + 30, x : x + 30] = (40, 200, 40)
            objects.append(("Tree", x + 1, y + 1, x + 30, y + 30))
        cv2.imwrite(str(raw / f"{stem}.png"), image)
        write_voc_xml(raw / f"{stem}.xml", f"{stem}.png", (width, height), objects)


def test_trees_demo_trains_evaluates_per_site_and_writes_the_summary(tmp_path, monkeypatch):
    _raw(tmp_path)
    monkeypatch.setenv("DSLA_TREES_ROOT", str(tmp_path))
    register_neon_trees()
    out = tmp_path / "out"
    sizes = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128"]
    sizes += ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128"]
    common = ["--device", "cpu", "--num-vis", "2", "--no-orthophoto"]
    try:
        trees_demo.main(
            ["--output", str(out), *common, "MODEL.WEIGHTS", "", "SOLVER.MAX_ITER", "2"]
            + ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", *sizes]
        )
        # The trained model again, evaluated and drawn without training.
        trees_demo.main(
            ["--output", str(tmp_path / "again"), *common]
            + ["--weights", str(out / "model_final.pth"), *sizes]
        )
    finally:
        monkeypatch.delenv("DSLA_TREES_ROOT")
        register_neon_trees()
    summary = json.loads((out / "trees_summary.json").read_text())
    assert summary["minutes"] > 0 and summary["train_minutes"] > 0
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75"):
        assert 0 <= summary[key] <= 100 or summary[key] != summary[key]  # NaN when nothing matched
    assert sorted(summary["AP50_by_site"]) == ["OSBS", "SOAP", "YELL"]
    assert (out / "vis" / "contact_sheet.png").is_file()
    assert len(list((out / "vis").glob("*.png"))) == 3
    assert summary["trained"] is True

    again = json.loads((tmp_path / "again" / "trees_summary.json").read_text())
    assert again["trained"] is False
    assert not (tmp_path / "again" / "model_final.pth").exists()
    assert again["weights"] == str(out / "model_final.pth")
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75"):
        assert again[key] == pytest.approx(summary[key], abs=1e-6, nan_ok=True)
    assert again["AP50_by_site"] == pytest.approx(summary["AP50_by_site"], nan_ok=True)
    assert (tmp_path / "again" / "vis" / "contact_sheet.png").is_file()
