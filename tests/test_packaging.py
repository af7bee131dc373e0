"""The environment dsla needs: a recent enough detectron2, checked at import, and detectron2's own
model zoo."""

import importlib
import os
import subprocess
import sys

import pytest

import detectron2
from detectron2.modeling import Backbone

import dsla


def test_detectron2_model_zoo_and_testing_utilities_import():
    # Both import pkg_resources, which setuptools 81 dropped; setup.cfg pins setuptools<81.
    importlib.import_module("detectron2.model_zoo")
    importlib.import_module("detectron2.utils.testing")


@pytest.mark.parametrize("version", ["0.5", "0.4.1", "0.1.3"])
def test_too_old_detectron2_is_an_import_error_that_states_the_minimum(monkeypatch, version):
    monkeypatch.setattr(detectron2, "__version__", version)
    with pytest.raises(ImportError, match=rf"detectron2 >= 0\.6 .*found detectron2 {version}"):
        dsla._check_detectron2()


def test_detectron2_06_release_without_padding_constraints_is_an_import_error(monkeypatch):
    monkeypatch.setattr(detectron2, "__version__", "0.6")
    monkeypatch.delattr(Backbone, "padding_constraints")
    with pytest.raises(ImportError, match="padding_constraints"):
        dsla._check_detectron2()


def test_supported_detectron2_versions_pass(monkeypatch):
    assert detectron2.__version__ == "0.7.2"
    for version in ("0.6", "0.7.2", "1.0"):
        monkeypatch.setattr(detectron2, "__version__", version)
        dsla._check_detectron2()


def test_import_dsla_fails_for_an_old_detectron2():
    code = "import detectron2; detectron2.__version__ = '0.5'; import dsla"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode != 0
    assert "ImportError: dsla needs detectron2 >= 0.6" in out.stderr
