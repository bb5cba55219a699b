# Quick start: `make run` (classify the bundled images with GPUNet-D1) and `make test`.
# Both create .venv on first use. PYTHON must be Python >= 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The PyTorch build this project is tested with (users may install any torch>=2.5).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: run test test-all lint golden clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS) -e '.[dev,export,openvino]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gpunet predict examples/ --model gpunet_d1 --pretrained

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src

golden: $(STAMP)
	$(PY) ../shared/reference/golden/check.py --preprocess

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
