#!/usr/bin/env python
"""
Run a DSLA model on images or a video and draw its detections with detectron2's Visualizer.

    python demo.py --config-file configs/DSLA/dsla_quickstart_shapes.yaml \
        --input img1.jpg dir/ 'imgs/*.png' --output out/ \
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth

Class names come from the metadata of the first dataset in ``DATASETS.TEST`` (or ``--dataset``);
COCO-format datasets can be registered with ``--register-coco NAME JSON IMAGE_ROOT``.
"""

import argparse
import glob
import logging
import os
import sys

import cv2
import tqdm

from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

from dsla import get_dsla_cfg
from dsla.checkpoint import Predictor
from dsla.data import add_dataset_arguments, dataset_classes, register_datasets_from_args
from dsla.engine import add_require_gpu_argument
from dsla.tiled_inference import TiledPredictor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("dsla.demo")


def get_parser():
    parser = argparse.ArgumentParser(description="DSLA demo with detectron2's Visualizer")
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="path to a config file"
    )
    parser.add_argument("--input", nargs="+", help="images: files, directories or glob patterns")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument(
        "--output",
        help="a directory for the visualizations, or a file name when there is a single input; "
        "if not given, nothing is written and the detections are logged",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score to draw"
    )
    parser.add_argument(
        "--dataset", help="dataset whose class names to use (default: first of DATASETS.TEST)"
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=0,
        metavar="SIZE",
        help="run on overlapping tiles of SIZE pixels and merge them (large images such as "
        "aerial orthophotos; e.g. the training tiles' size); 0: the whole image at once",
    )
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        metavar="PIXELS",
        help="pixels shared by neighbouring tiles, at least the largest object (default: SIZE/4)",
    )
    add_dataset_arguments(parser)
    add_require_gpu_argument(parser)
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs"
    )
    return parser


def setup_cfg(args):
    cfg = get_dsla_cfg(args.config_file, args.opts, freeze=True, require_gpu=args.require_gpu)
    if not cfg.MODEL.WEIGHTS:
        logger.warning(
            "MODEL.WEIGHTS is empty: the model has random weights and its detections mean nothing; "
            "give a trained model with --opts MODEL.WEIGHTS path/to/model_final.pth"
        )
    return cfg


def expand_inputs(patterns):
    """Files, directories (their images, sorted) and glob patterns -> a list of image paths."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            paths += sorted(
                os.path.join(pattern, f)
                for f in os.listdir(pattern)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(pattern):
            paths.append(pattern)
        else:
            matches = sorted(glob.glob(os.path.expanduser(pattern)))
            if not matches:
                raise FileNotFoundError(
                    f"--input {pattern}: no such file, directory or matching image"
                )
            paths += matches
    return paths


def output_path(output, image_path, num_inputs):
    if os.path.isdir(output) or num_inputs > 1 or not os.path.splitext(output)[1]:
        os.makedirs(output, exist_ok=True)
        return os.path.join(output, os.path.basename(image_path))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    return output


def detections_above(instances, threshold):
    return instances[instances.scores >= threshold].to("cpu")


def run_on_images(predictor, metadata, paths, args):
    for path in tqdm.tqdm(paths, disable=not args.output):
        image = read_image(path, format="BGR")
        instances = detections_above(predictor(image)["instances"], args.confidence_threshold)
        logger.info(f"{path}: {len(instances)} detections")
        visualizer = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
        drawn = visualizer.draw_instance_predictions(instances).get_image()[:, :, ::-1]
        if args.output:
            cv2.imwrite(output_path(args.output, path, len(paths)), drawn)


def run_on_video(predictor, metadata, args):
    video = cv2.VideoCapture(args.video_input)
    if not video.isOpened():
        raise FileNotFoundError(f"--video-input {args.video_input}: cannot open the video")
    width, height = (
        int(video.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(video.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    num_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    visualizer = VideoVisualizer(metadata, ColorMode.IMAGE)
    writer = None
    if args.output:
        path = args.output
        if os.path.isdir(path) or not os.path.splitext(path)[1]:
            os.makedirs(path, exist_ok=True)
            path = os.path.join(
                path, os.path.splitext(os.path.basename(args.video_input))[0] + ".mp4"
            )
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for _ in tqdm.tqdm(range(num_frames)):
            ok, frame = video.read()
            if not ok:
                break
            instances = detections_above(predictor(frame)["instances"], args.confidence_threshold)
            drawn = visualizer.draw_instance_predictions(frame[:, :, ::-1], instances).get_image()[
                :, :, ::-1
            ]
            if writer is not None:
                writer.write(drawn)
    finally:
        video.release()
        if writer is not None:
            writer.release()


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dsla")
    if not args.input and not args.video_input:
        raise SystemExit("give --input or --video-input")
    register_datasets_from_args(args)
    cfg = setup_cfg(args)
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
    metadata = MetadataCatalog.get(dataset)
    if metadata.get("thing_classes") is None and metadata.get("json_file"):
        # A --register-coco dataset gets its class names only when loaded; read them from its JSON
        # instead.
        metadata.thing_classes = dataset_classes(dataset)
    predictor = Predictor(cfg)
    if args.tile:
        predictor = TiledPredictor.from_config(predictor.model, cfg, args.tile, args.tile_overlap)
    if args.input:
        run_on_images(predictor, metadata, expand_inputs(args.input), args)
    if args.video_input:
        run_on_video(predictor, metadata, args)


if __name__ == "__main__":
    sys.exit(main())
