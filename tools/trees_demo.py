#!/usr/bin/env python
"""
The real-images demo (``make trees-demo``): fine-tune DSLA from an ImageNet MobileNetV2 on the NEON
aerial tree crowns (``make trees`` first), evaluate it with COCOEvaluator on ``neon_trees_val`` and
per site, draw the validation tiles next to their ground truth (one contact sheet), and run the
model over a whole 2299x2472 orthophoto in overlapping tiles.

    python tools/trees_demo.py [--output output/trees] [--config-file CFG] [KEY VALUE ...]
    python tools/trees_demo.py --weights model_final.pth   # a trained model: evaluate and draw it

Writes ``OUTPUT/trees_summary.json`` (minutes, ``bbox/AP``, ``bbox/AP50``, ``bbox/AP75``, AP50 per
site), ``OUTPUT/vis/`` and ``OUTPUT/orthophoto.jpg``.
"""

import argparse
import os
import time

import cv2
import torch

from detectron2.data.detection_utils import read_image

from dsla.data.neon_trees import SITES, neon_trees_root
from dsla.engine.demo import evaluate_datasets, format_summary, train_and_show, write_summary
from dsla.tiled_inference import predict_tiled
from dsla.visualization import draw_boxes

CONFIG = "configs/DSLA/dsla_mobilenet_v2_trees.yaml"
ORTHOPHOTO = "2019_YELL_2_528000_4978000_image_crop2.png"
THRESHOLD = 0.3


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="output/trees")
    parser.add_argument("--config-file", default=None, help=f"default: {CONFIG}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-vis", type=int, default=10, help="validation tiles to draw")
    parser.add_argument(
        "--no-orthophoto", action="store_true", help="skip the whole-orthophoto picture"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="a model of the config trained before (e.g. by the study): evaluate and draw it, do "
        "not train",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = args.config_file or os.path.join(repo, CONFIG)

    start = time.perf_counter()
    result = train_and_show(
        config, args.output, args.device, args.opts, args.num_vis, THRESHOLD, weights=args.weights
    )
    cfg = result["cfg"]
    per_site = evaluate_datasets(cfg, [f"neon_trees_val_{site.lower()}" for site in SITES])
    result["AP50_by_site"] = {
        site: per_site[f"neon_trees_val_{site.lower()}"]["AP50"] for site in SITES
    }
    if not args.no_orthophoto:
        image = read_image(os.path.join(neon_trees_root(), "raw", ORTHOPHOTO), format="BGR")
        instances = predict_tiled(cfg, image)
        path = os.path.join(args.output, "orthophoto.jpg")
        cv2.imwrite(path, draw_boxes(image, instances, THRESHOLD, max_width=2400))
        result["orthophoto"] = path
        result["orthophoto_detections"] = int((instances.scores >= THRESHOLD).sum())
    result["minutes"] = (time.perf_counter() - start) / 60

    print(format_summary("Real-images demo", result, cfg.DATASETS.TEST[0], THRESHOLD))
    sites = ", ".join(f"{SITES[s]} {ap:.1f}" for s, ap in result["AP50_by_site"].items())
    print(f"  AP50 by site:   {sites}")
    if "orthophoto" in result:
        print(
            f"  orthophoto:     {result['orthophoto']} ({result['orthophoto_detections']} trees "
            f"with score >= {THRESHOLD:g}; it includes the training tiles)\n"
        )
    write_summary(os.path.join(args.output, "trees_summary.json"), result)
    return result


if __name__ == "__main__":
    main()
