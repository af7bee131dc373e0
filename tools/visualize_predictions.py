#!/usr/bin/env python
"""
Draw a model's detections next to the ground truth for images of a registered dataset.

    python tools/visualize_predictions.py --config-file configs/DSLA/dsla_quickstart_shapes.yaml \
        --dataset shapes_val --output output/quickstart/vis --num-images 24 \
        MODEL.WEIGHTS output/quickstart/model_final.pth

Each output image shows the ground truth on the left and the detections scoring at least
``--confidence-threshold`` on the right, both drawn with detectron2's Visualizer.
"""
import argparse
import logging
import os
import sys

import cv2
import numpy as np
import tqdm

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dsla import get_dsla_cfg  # noqa: E402
from dsla.data import add_register_coco_argument, register_coco_datasets  # noqa: E402

logger = logging.getLogger("dsla.visualize")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--dataset", help="registered dataset (default: first of DATASETS.TEST)")
    parser.add_argument("--output", required=True, help="directory for the images")
    parser.add_argument("--num-images", type=int, default=24, help="how many images, from the start of the dataset")
    parser.add_argument("--confidence-threshold", type=float, default=0.3)
    add_register_coco_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


def side_by_side(record, instances, metadata):
    """RGB image: ground truth (left) and detections (right), separated by a white bar."""
    image = read_image(record["file_name"], format="RGB")
    gt = Visualizer(image, metadata).draw_dataset_dict(record).get_image()
    pred = Visualizer(image, metadata).draw_instance_predictions(instances).get_image()
    bar = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([gt, bar, pred], axis=1)


def visualize(cfg, dataset, output, num_images, threshold):
    """Writes ``num_images`` side-by-side images of ``dataset`` to ``output``; returns their paths."""
    metadata = MetadataCatalog.get(dataset)
    records = DatasetCatalog.get(dataset)[:num_images]
    predictor = DefaultPredictor(cfg)
    os.makedirs(output, exist_ok=True)
    paths = []
    for record in tqdm.tqdm(records, desc="visualizing", unit="img"):
        image = read_image(record["file_name"], format="BGR")
        instances = predictor(image)["instances"].to("cpu")
        instances = instances[instances.scores >= threshold]
        path = os.path.join(output, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png")
        cv2.imwrite(path, side_by_side(record, instances, metadata)[:, :, ::-1])
        paths.append(path)
    return paths


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dsla")
    register_coco_datasets(args.register_coco)
    cfg = get_dsla_cfg(args.config_file, args.opts, freeze=True)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    paths = visualize(cfg, dataset, args.output, args.num_images, args.confidence_threshold)
    logger.info(f"Wrote {len(paths)} images (ground truth left, detections right) to {args.output}")
    return paths


if __name__ == "__main__":
    main()
