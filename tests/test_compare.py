"""tools/compare.py (make compare) end to end on a tiny copy of the shapes dataset."""

import json
import os
import runpy

from PIL import Image

from conftest import REPO_ROOT, shapes_env


def test_trains_both_detectors_and_writes_ap_consistency_and_plots(shapes_root, monkeypatch):
    # The consistency analysis runs as a script in a process of its own, on the same small shapes
    # dataset.
    for key, value in shapes_env(shapes_root).items():
        if key.startswith("DSLA_"):
            monkeypatch.setenv(key, value)
    out = shapes_root / "compare"
    summary = runpy.run_path(os.path.join(REPO_ROOT, "tools", "compare.py"))["main"](
        [
            "--output",
            str(out),
            "--device",
            "cpu",
            "SOLVER.MAX_ITER",
            "6",
            "SOLVER.IMS_PER_BATCH",
            "4",
            "SOLVER.WARMUP_ITERS",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "MODEL.DSLA.SCORE_THRESH_TEST",
            "0.0",
            "MODEL.FCOS.SCORE_THRESH_TEST",
            "0.0",
        ]
    )
    assert set(summary) == {"DSLA", "DSLA-COCO-ranges", "FCOS"}
    for name in ("dsla", "dsla-coco-ranges", "fcos"):
        assert os.path.isfile(out / name / "model_final.pth")
    for result in summary.values():
        assert "bbox/AP" in result["coco"]
        assert result["consistency"]["num_detections"] > 0
    with open(out / "compare_summary.json") as f:
        assert json.load(f).keys() == summary.keys()
    for plot in ("score_vs_iou.png", "consistency.png"):
        with Image.open(out / plot) as im:
            assert im.size[0] > 100 and len(set(im.convert("L").getdata())) > 2
