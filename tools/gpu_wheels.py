#!/usr/bin/env python
"""
The wheels that ``tools/gpu_check.sh`` needs on this project's lent GPU machine (``make
gpu-wheels``; docs/gpu.md): everything the project and its tests import beyond what that machine's
image already has, for CPython 3.12 on manylinux x86-64, one version of each, in the versions this
environment runs.

    python tools/gpu_wheels.py [--dest .whl]

``--dest`` is emptied of wheels first. Three kinds of wheel are written: the registry's own binary
wheels; wheels built here from the pure-Python packages the registry has only as sources (fvcore,
iopath, antlr4); and the two built from this tree: detectron2 repacked as
``tools/install_detectron2.sh`` does it, and the project itself. The script then checks that every
requirement of every wheel (the project's ``test`` extra included) is met by a wheel or by the
machine's image, and that the wheels and the working tree together fit in what travels to the
machine (64 MiB); it fails with the reason otherwise.
"""

import argparse
import glob
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What travels to the device machine at most: the working tree and the carried wheels.
TRAVEL_LIMIT_MB = 64
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
# On the registry as wheels (pycocotools compiled for cp312); setuptools because the image's may be
# 81 or later, without the pkg_resources that detectron2.model_zoo imports (setup.cfg pins <81).
BINARY = ["pycocotools", "yacs", "termcolor", "omegaconf", "hydra-core", "setuptools"]
# Pure Python, on the registry only as source distributions: built into wheels here.
SOURCE_ONLY = ["fvcore", "iopath", "antlr4-python3-runtime"]
# The packages of the device machine's image ('cuda') that these wheels require, from the device
# notes' package list (torch 2.11, torchvision 0.26, numpy 2.5 when last read).
ON_DEVICE = {
    canonicalize_name(n)
    for n in (
        "torch torchvision numpy pillow matplotlib opencv-python-headless timm tqdm tabulate "
        "cloudpickle tensorboard packaging pyyaml portalocker typing-extensions pytest "
        "pytest-timeout hypothesis onnx onnxruntime"
    ).split()
}
# Requirements not needed there: the linter of the test extra.
NOT_NEEDED = {"ruff"}
# The environment of the device machine's python3, for requirement markers.
DEVICE_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
logger = logging.getLogger("dsla.gpu_wheels")


def wheel_requirements(path, extras=()):
    """
    The requirements of the wheel at ``path`` that apply on the device machine, with ``extras``.

    Returns:
        list[Requirement]
    """
    with zipfile.ZipFile(path) as whl:
        (metadata,) = [n for n in whl.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        lines = whl.read(metadata).decode().splitlines()
    requirements = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        marker = req.marker or Marker("python_version >= '0'")
        if any(marker.evaluate({**DEVICE_MARKERS, "extra": e}) for e in ("", *extras)):
            requirements.append(req)
    return requirements


def check_wheels(paths, provided, extras=None):
    """
    Problems with a set of wheels meant to be installed together with ``--no-deps``.

    Args:
        paths: the wheel files.
        provided: canonical names of the packages already installed where they go.
        extras: {canonical distribution name: extras of it that are needed}.

    Returns:
        list[str]: one sentence per problem; empty if none.
    """
    extras = extras or {}
    names = {}
    for path in paths:
        name = canonicalize_name(parse_wheel_filename(os.path.basename(path))[0])
        names.setdefault(name, []).append(os.path.basename(path))
    problems = [
        f"{len(files)} versions of {name}: {', '.join(sorted(files))} (keep one)"
        for name, files in sorted(names.items())
        if len(files) > 1
    ]
    for path in sorted(paths):
        name = canonicalize_name(parse_wheel_filename(os.path.basename(path))[0])
        for req in wheel_requirements(path, extras.get(name, ())):
            needed = canonicalize_name(req.name)
            if needed not in names and needed not in provided and needed not in NOT_NEEDED:
                problems.append(
                    f"{os.path.basename(path)} requires {req}, which is neither a wheel here "
                    "nor on the device machine"
                )
    return problems


def travel_size_mb(repo, wheel_paths):
    """
    MiB of what a device run carries: the tracked and untracked-not-ignored files of ``repo``
    (what travels on its own) and the wheels.

    Returns:
        (tree_mb, wheels_mb)
    """
    files = _tree_files(repo)
    tree = sum(
        os.path.getsize(os.path.join(repo, f))
        for f in files
        if os.path.isfile(os.path.join(repo, f))
    )
    wheels = sum(os.path.getsize(p) for p in wheel_paths)
    return tree / 2**20, wheels / 2**20


def _tree_files(repo):
    """The tracked and untracked-not-ignored files of ``repo``, relative to it."""
    out = subprocess.run(
        ["git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f for f in out.split("\0") if f and os.path.lexists(os.path.join(repo, f))]


def _pip(*args):
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def _pinned(name):
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            f"gpu_wheels: {name} is not installed in {sys.executable}; the wheels take the "
            "versions of this environment: run `make install` first"
        ) from None


def download(dest):
    """Write every wheel the device machine needs into ``dest``, after removing the old ones."""
    os.makedirs(dest, exist_ok=True)
    for old in glob.glob(os.path.join(dest, "*.whl")):
        os.remove(old)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    _pip(
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        *platforms,
        "-d",
        dest,
        *[_pinned(n) for n in BINARY],
    )
    _pip(
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-binary=:all:",
        "-w",
        dest,
        *[_pinned(n) for n in SOURCE_ONLY],
    )
    subprocess.run(
        ["bash", os.path.join(REPO_ROOT, "tools/install_detectron2.sh"), sys.executable]
        + ["--wheel-dir", dest],
        check=True,
    )
    # Built from a copy of the tree: setuptools' build/ in the tree would keep files deleted since.
    with tempfile.TemporaryDirectory() as copy:
        for f in _tree_files(REPO_ROOT):
            os.makedirs(os.path.dirname(os.path.join(copy, f)), exist_ok=True)
            shutil.copy2(os.path.join(REPO_ROOT, f), os.path.join(copy, f), follow_symlinks=False)
        _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", dest, copy)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", default=os.path.join(REPO_ROOT, ".whl"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    download(args.dest)
    wheels = sorted(glob.glob(os.path.join(args.dest, "*.whl")))
    problems = check_wheels(wheels, ON_DEVICE, {"dsla-detectron2": ("test",)})
    if problems:
        raise SystemExit(
            "gpu_wheels: the wheels would not install together:\n  " + "\n  ".join(problems)
        )
    tree_mb, wheels_mb = travel_size_mb(REPO_ROOT, wheels)
    for path in wheels:
        logger.info(f"{os.path.getsize(path) / 2**20:7.2f} MiB  {os.path.basename(path)}")
    summary = (
        f"{len(wheels)} wheels, {wheels_mb:.1f} MiB in {args.dest}; with the working tree "
        f"({tree_mb:.1f} MiB) {tree_mb + wheels_mb:.1f} MiB of the {TRAVEL_LIMIT_MB} MiB a device "
        "run carries"
    )
    if tree_mb + wheels_mb > TRAVEL_LIMIT_MB:
        raise SystemExit(
            f"gpu_wheels: too large: {summary}. Remove large untracked files from the tree, or "
            "drop a wheel the machine's image already has."
        )
    logger.info(summary)


if __name__ == "__main__":
    main()
