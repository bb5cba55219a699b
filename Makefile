# Quick start: `make run` (classify the bundled images with GPUNet-D1) and `make test`.
# Both create .venv on first use. PYTHON must be Python >= 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The PyTorch build this project is tested with (users may install any torch>=2.5).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: run test test-all timm-tests browser lint golden clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS) -e '.[dev,export,openvino]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gpunet predict examples/ --model gpunet_d1 --pretrained

test: $(STAMP) timm-tests browser
	$(PY) -m pytest -q

test-all: $(STAMP) timm-tests browser
	$(PY) -m pytest -q -m ''

# timm's own generic model tests (tests/ of the installed timm's sdist, from PyPI), once per timm version, for
# tests/test_timm_generic.py; offline this warns and those tests skip.
timm-tests:
	@v=$$($(PY) -c 'import importlib.metadata as m; print(m.version("timm"))') && d=build/timm-tests/$$v && \
	if [ ! -f $$d/tests/test_models.py ]; then \
	  rm -rf $$d.partial && mkdir -p $$d.partial && \
	  $(PY) -m pip download --quiet --no-deps --no-binary :all: "timm==$$v" -d $$d.partial && \
	  tar -xzf $$d.partial/timm-$$v.tar.gz -C $$d.partial --strip-components=1 timm-$$v/tests && \
	  rm -rf $$d && mkdir -p $$d && mv $$d.partial/tests $$d/tests && rm -rf $$d.partial || \
	  echo "warning: could not fetch timm $$v's tests from PyPI; tests/test_timm_generic.py will skip"; fi

# Debian's chromium and its driver, for the demo page's headless-browser test (tests/test_serve_e2e.py):
# installed when missing, as root with apt-get; elsewhere that test skips and says why.
BROWSER_PKGS := chromium chromium-driver
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(BROWSER_PKGS); } >/dev/null || echo "warning: could not install $(BROWSER_PKGS); the browser test will skip"; \
	else echo "warning: $(BROWSER_PKGS) missing and not root; the browser test will skip"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src

golden: $(STAMP)
	$(PY) ../shared/reference/golden/check.py --preprocess

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
