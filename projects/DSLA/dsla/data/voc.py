"""
Pascal VOC XML annotations as detectron2 datasets, for a user's own folder (``--register-voc``).

detectron2's ``load_voc_instances`` reads the same XML but only in the VOC2007/2012 layout, with
``JPEGImages/<id>.jpg`` and a split file; the tools people label with (labelImg, CVAT's VOC export,
DeepForest) also write a flat folder of images and XML files side by side, in any image format.
:func:`load_voc_folder` reads both; coordinates follow detectron2's VOC convention (1-based
inclusive pixels, so ``xmin - 1`` and ``ymin - 1``). The datasets are evaluated with detectron2's
``COCOEvaluator`` (``evaluator_type`` "coco"), which converts them itself, for COCO's AP, AP50,
AP75 and the size ranges.
"""

import math
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Mapping, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

__all__ = [
    "add_register_voc_argument",
    "load_voc_folder",
    "parse_voc_xml",
    "register_voc_datasets",
    "register_voc_folder",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _text(node: ET.Element, path: str, where: str) -> str:
    child = node.find(path)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{where}: no <{path}>")
    return child.text.strip()


def parse_voc_xml(
    xml_file: str,
    class_names: Sequence[str],
    class_map: Optional[Mapping[str, str]] = None,
    one_based: bool = True,
) -> Dict:
    """
    One VOC annotation file.

    Args:
        xml_file: path of the XML.
        class_names: the dataset's classes; ``category_id`` is the index of an object's class here.
        class_map: optional renaming of the XML's ``<name>`` values (e.g. several labels to one
            class) before they are looked up in ``class_names``.
        one_based: the VOC convention (detectron2's): coordinates are 1-based inclusive pixel
            indices, so the box is ``(xmin - 1, ymin - 1, xmax, ymax)``. False takes them as
            they are (tools that write 0-based coordinates).

    Returns:
        dict with ``filename`` (as the XML names it, may be empty), ``height``, ``width`` and
        ``annotations`` (detectron2's ``bbox`` in ``XYXY_ABS``, ``category_id``, ``iscrowd`` 0).

    Raises:
        ValueError naming the file and the object, for an unknown class or a box that is not
        finite, not inside the image or of non-positive size.
    """
    try:
        root = ET.parse(xml_file).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{xml_file}: not a readable XML file ({e})") from e
    width = int(float(_text(root, "size/width", xml_file)))
    height = int(float(_text(root, "size/height", xml_file)))
    filename = root.findtext("filename", default="").strip()
    annotations = []
    for i, obj in enumerate(root.findall("object")):
        where = f"{xml_file}: object {i}"
        name = _text(obj, "name", where)
        name = (class_map or {}).get(name, name)
        if name not in class_names:
            raise ValueError(f"{where} has class {name!r}, not one of {list(class_names)}")
        try:
            xmin, ymin, xmax, ymax = (
                float(_text(obj, f"bndbox/{k}", where)) for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError as e:
            raise ValueError(f"{where}: unreadable box ({e})") from e
        shift = 1.0 if one_based else 0.0
        box = [xmin - shift, ymin - shift, xmax, ymax]
        if not all(math.isfinite(v) for v in box):
            raise ValueError(f"{where} has a non-finite box {box}")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"{where} has a box of non-positive size {[xmin, ymin, xmax, ymax]}")
        if box[0] < -1 or box[1] < -1 or box[2] > width + 1 or box[3] > height + 1:
            raise ValueError(f"{where} has a box {[xmin, ymin, xmax, ymax]} outside the image")
        annotations.append(
            {
                "bbox": box,
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": class_names.index(name),
                "iscrowd": 0,
            }
        )
    return {"filename": filename, "height": height, "width": width, "annotations": annotations}


def _find_image(image_dir: str, stem: str, named: str, xml_file: str) -> str:
    """The image an XML describes: the file it names if it exists, else ``stem`` with any image
    extension (an XML may name a .tif whose .png lies beside it)."""
    candidates = [named] if named else []
    candidates += [stem + ext for ext in IMAGE_EXTENSIONS]
    candidates += [stem + ext.upper() for ext in IMAGE_EXTENSIONS]
    for name in candidates:
        path = os.path.join(image_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{xml_file}: no image for it in {image_dir} (looked for {named or stem + '.*'})"
    )


def load_voc_folder(
    dirname: str,
    class_names: Sequence[str],
    split: Optional[str] = None,
    class_map: Optional[Mapping[str, str]] = None,
) -> List[Dict]:
    """
    detectron2 dataset dicts of a folder of VOC annotations.

    Args:
        dirname: either a VOC layout (``Annotations/*.xml``, images in ``JPEGImages/``) or a flat
            folder of images and XML files side by side.
        class_names: the classes, in ``category_id`` order.
        split: with a VOC layout, the ids of ``ImageSets/Main/{split}.txt``; None: every XML.
        class_map: see :func:`parse_voc_xml`.

    Returns:
        list of dicts (``file_name``, ``image_id``, ``height``, ``width``, ``annotations``).
    """
    voc_layout = os.path.isdir(os.path.join(dirname, "Annotations"))
    xml_dir = os.path.join(dirname, "Annotations") if voc_layout else dirname
    image_dir = os.path.join(dirname, "JPEGImages") if voc_layout else dirname
    if split is not None:
        split_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f"VOC split {split!r}: no {split_file}")
        with open(split_file) as f:
            stems = [line.split()[0] for line in f if line.strip()]
    else:
        if not os.path.isdir(xml_dir):
            raise FileNotFoundError(f"VOC dataset: no folder {xml_dir}")
        stems = sorted(f[: -len(".xml")] for f in os.listdir(xml_dir) if f.endswith(".xml"))
    if not stems:
        raise ValueError(f"VOC dataset {dirname}: no annotation files (*.xml) found")
    dicts = []
    for stem in stems:
        xml_file = os.path.join(xml_dir, stem + ".xml")
        record = parse_voc_xml(xml_file, class_names, class_map)
        named = os.path.basename(record.pop("filename"))
        record["file_name"] = _find_image(image_dir, stem, named, xml_file)
        record["image_id"] = stem
        dicts.append(record)
    return dicts


def register_voc_folder(
    name: str,
    dirname: str,
    class_names: Sequence[str],
    split: Optional[str] = None,
    class_map: Optional[Mapping[str, str]] = None,
) -> None:
    """
    Register :func:`load_voc_folder` of ``dirname`` under ``name``, evaluated with detectron2's
    ``COCOEvaluator``. Registering the same folder again is a no-op; another dataset under a taken
    name is an error.
    """
    spec = (dirname, tuple(class_names), split)
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get("voc_spec") == spec:
            return
        raise ValueError(f"--register-voc {name}: a dataset of that name is already registered")
    classes = list(class_names)
    DatasetCatalog.register(name, lambda: load_voc_folder(dirname, classes, split, class_map))
    MetadataCatalog.get(name).set(
        thing_classes=classes, evaluator_type="coco", dirname=dirname, voc_spec=spec
    )


def add_register_voc_argument(parser):
    """
    Add ``--register-voc NAME DIR CLASSES`` (repeatable) to an argparse parser; see
    :func:`register_voc_datasets`.
    """
    parser.add_argument(
        "--register-voc",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "DIR", "CLASSES"),
        help="register a Pascal VOC dataset under NAME: DIR a folder of images and XML files, a "
        "VOC layout (Annotations/, JPEGImages/), or a split file ImageSets/Main/SPLIT.txt of one; "
        "CLASSES comma-separated (repeatable)",
    )
    return parser


def register_voc_datasets(specs: Sequence[Sequence[str]]) -> None:
    """
    Register what ``--register-voc`` gave: (NAME, DIR, CLASSES) each. DIR is a folder for
    :func:`load_voc_folder`, or the split file ``ROOT/ImageSets/Main/SPLIT.txt`` of a VOC layout;
    CLASSES is comma-separated (``Tree`` or ``car,person``).
    """
    for name, dirname, classes in specs:
        class_names = [c.strip() for c in classes.split(",") if c.strip()]
        if not class_names:
            raise ValueError(f"--register-voc {name}: no class names in {classes!r}")
        split = None
        if dirname.endswith(".txt"):
            main_dir = os.path.dirname(os.path.abspath(dirname))
            if not main_dir.endswith(os.path.join("ImageSets", "Main")):
                raise ValueError(
                    f"--register-voc {name}: {dirname} is not a split file ImageSets/Main/SPLIT.txt"
                )
            split = os.path.basename(dirname)[: -len(".txt")]
            dirname = os.path.dirname(os.path.dirname(main_dir))
        register_voc_folder(name, dirname, class_names, split)
