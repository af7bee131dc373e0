"""
The variants a study compares: a name, a base config and ``KEY VALUE`` overrides. The built-in ones
are detectron2's FCOS and DSLA as the quick start ships them, and DSLA with one thing changed at a
time.
"""

import ast
import math
import re
import shlex
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import yaml

from ..model_zoo import resolve_config_file

__all__ = [
    "BUILTIN_VARIANTS",
    "DSLA_BASE",
    "FCOS_BASE",
    "RETINANET_BASE",
    "Variant",
    "format_override_value",
    "load_variant_spec",
    "parse_override_value",
    "parse_variant",
    "resolve_config_file",
]

# A variant's name is a directory name of the study's output.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Variant:
    """
    A model to train: ``config_file`` (see :func:`resolve_config_file`) merged with ``opts``,
    ``(key, value)`` pairs whose values are Python values or strings that detectron2's
    ``merge_from_list`` decodes.
    """

    name: str
    config_file: str
    opts: Tuple[Tuple[str, Any], ...] = ()

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(
                f"Variant name '{self.name}': use letters, digits and . _ + - (it names a "
                "directory)"
            )

    def derive(self, name: str, opts: Iterable[Tuple[str, Any]]) -> "Variant":
        """This variant with more overrides (later ones win, as in ``merge_from_list``)."""
        return Variant(name, self.config_file, self.opts + tuple(opts))

    def flat_opts(self) -> List[Any]:
        """``opts`` as the flat ``[KEY, VALUE, ...]`` list of ``merge_from_list``."""
        return [item for pair in self.opts for item in pair]


DSLA_BASE = _DSLA = "DSLA/dsla_quickstart_shapes.yaml"
# detectron2's FCOS: the quick-start backbone, data and schedule with FCOS's own defaults (COCO
# level ranges, center sampling 1.5, points at the cell centers).
FCOS_BASE = _FCOS = "FCOS-Baseline/fcos_quickstart_shapes.yaml"
# detectron2's RetinaNet on the same backbone, data and schedule: what a detectron2 user has without
# this project.
RETINANET_BASE = "RetinaNet-Baseline/retinanet_quickstart_shapes.yaml"
_COCO_RANGES = [[0.0, 64.0], [64.0, 128.0], [128.0, 256.0], [256.0, 512.0], [512.0, float("inf")]]
# The quick start's (and the real-images configs') DSLA ranges: COCO's halved.
_DSLA_RANGES = [[0.0, 32.0], [32.0, 64.0], [64.0, 128.0], [128.0, 256.0], [256.0, float("inf")]]
_QUARTER_COCO_RANGES = [
    [0.0, 16.0],
    [16.0, 32.0],
    [32.0, 64.0],
    [64.0, 128.0],
    [128.0, float("inf")],
]

BUILTIN_VARIANTS: Tuple[Variant, ...] = (
    Variant("fcos", _FCOS),
    Variant("dsla", _DSLA),
    # The two label assignments on equal footing: detectron2's FCOS at DSLA's ranges (both with
    # center sampling 1.5 and points at offset 0.5, as both configs have them).
    Variant("fcos-dsla-ranges", _FCOS, (("MODEL.FCOS.REGRESS_RANGES", _DSLA_RANGES),)),
    Variant("retinanet", RETINANET_BASE),
    # The paper's ablations (docs/method.md, "The label"): y_d = y_s without IoU, y_d = IoU, gamma =
    # 0, no core zone.
    Variant("dsla-no-coupling", _DSLA, (("MODEL.DSLA.IOU_COUPLING", False),)),
    Variant("dsla-iou-only", _DSLA, (("MODEL.DSLA.IOU_ONLY", True),)),
    Variant("dsla-no-relaxation", _DSLA, (("MODEL.DSLA.INTERVAL_RELAXATION", 0.0),)),
    Variant("dsla-no-core-zone", _DSLA, (("MODEL.DSLA.CORE_ZONE", False),)),
    # Where the positives are (see docs/study.md): the authors' R-50
    # assignment (no center sampling, points at offset 0) on the quick-start ranges; the quick start
    # before the study (COCO's ranges divided by 4, no center sampling, offset 0); and COCO's
    # ranges, which detectron2's FCOS has built in.
    Variant(
        "dsla-no-cs-offset",
        _DSLA,
        (("MODEL.DSLA.CENTER_SAMPLING_RADIUS", 0.0), ("MODEL.DSLA.POINT_OFFSET", 0.0)),
    ),
    Variant(
        "dsla-quarter-ranges",
        _DSLA,
        (
            ("MODEL.DSLA.REGRESS_RANGES", _QUARTER_COCO_RANGES),
            ("MODEL.DSLA.CENTER_SAMPLING_RADIUS", 0.0),
            ("MODEL.DSLA.POINT_OFFSET", 0.0),
        ),
    ),
    Variant("dsla-fcos-ranges", _DSLA, (("MODEL.DSLA.REGRESS_RANGES", _COCO_RANGES),)),
)


def parse_override_value(text: str) -> Any:
    """
    A config value given as text: a Python literal as detectron2 reads it (``[[0, 32], [32, 1e8]]``,
    ``(160,)``, ``False``), else YAML as in the config files (``[[0, 64], [512, .inf]]``), else the
    string itself.
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None or isinstance(value, str) else value


def format_override_value(value: Any) -> str:
    """A config value as text that :func:`parse_override_value` reads back, e.g. ``[[0.0, 64.0],
    [512.0, .inf]]``."""
    if isinstance(value, (list, tuple)):
        text = ", ".join(format_override_value(v) for v in value)
        return (
            f"[{text}]" if isinstance(value, list) else f"({text}{',' if len(value) == 1 else ''})"
        )
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return str(value)


def _pairs(items: Sequence[Any], where: str) -> List[Tuple[str, Any]]:
    if len(items) % 2:
        raise ValueError(
            f"{where}: overrides must be KEY VALUE pairs, got an odd number of items {list(items)}"
        )
    return [(str(k), v) for k, v in zip(items[0::2], items[1::2])]


def _base(name_or_config: str, known: Dict[str, Variant], where: str) -> Variant:
    if name_or_config in known:
        return known[name_or_config]
    if name_or_config.endswith((".yaml", ".yml")):
        resolve_config_file(name_or_config)
        return Variant("base", name_or_config)
    raise ValueError(
        f"{where}: base '{name_or_config}' is neither a known variant {sorted(known)} nor a .yaml "
        "config"
    )


def parse_variant(text: str, known: Dict[str, Variant]) -> Variant:
    """
    A variant from ``NAME=BASE KEY VALUE [KEY VALUE ...]``: BASE is a variant in ``known`` (its
    overrides are kept) or a config file; values as :func:`parse_override_value` reads them;
    shell-style quotes group a value with spaces. E.g. ``dsla-r32=dsla MODEL.DSLA.REGRESS_RANGES
    [[0,32],[32,64],[64,128],[128,256],[256,.inf]]``.
    """
    tokens = shlex.split(text)
    if not tokens or "=" not in tokens[0]:
        raise ValueError(f"--variant '{text}': expected NAME=BASE KEY VALUE ...")
    name, base = tokens[0].split("=", 1)
    values = [
        token if i % 2 == 0 else parse_override_value(token) for i, token in enumerate(tokens[1:])
    ]
    return _base(base, known, f"--variant {name}").derive(name, _pairs(values, f"--variant {name}"))


def load_variant_spec(path: str, known: Dict[str, Variant]) -> List[Variant]:
    """
    Variants from a YAML (or JSON) file::

        variants:
          - name: dsla-r32
            base: dsla                      # a known or earlier variant, or a config file
            opts:                           # a mapping or a [KEY, VALUE, ...] list; YAML values
              MODEL.DSLA.REGRESS_RANGES: [[0, 32], [32, 64], [64, 128], [128, 256], [256, .inf]]
    """
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    known = dict(known)
    variants = []
    for entry in spec.get("variants", []):
        where = f"{path}: variant {entry.get('name')}"
        if "name" not in entry or "base" not in entry:
            raise ValueError(f"{where}: each variant needs a name and a base")
        opts = entry.get("opts") or []
        overrides = list(opts.items()) if isinstance(opts, dict) else _pairs(opts, where)
        variant = _base(str(entry["base"]), known, where).derive(str(entry["name"]), overrides)
        known[variant.name] = variant
        variants.append(variant)
    return variants
