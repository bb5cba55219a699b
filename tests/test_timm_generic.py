"""timm's own generic model tests (`tests/test_models.py` of the installed timm's sdist) on the GPUNets.

They run in a real pytest subprocess with `tests/_timm_plugin.py`, which imports gpunet before
timm's module is collected, so timm's parametrisations (`list_models`, `list_pretrained`) pick up
the seven models. The pretrained tests download through gpunet's path from a loopback
`GPUNET_NGC_MIRROR` holding NGC-style zips of (random) weights.

`make test` fetches timm's sdist tests once into build/timm-tests/<timm version>/tests
(`GPUNET_TIMM_TESTS` may name another copy); without them these tests skip. By default
GPUNet-0 runs (all but timm's own CI-excluded pruning sweep); `-m slow` runs all seven models
and every test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
from _helpers import ROOT, loopback_server, save_zoo_mirror

import gpunet

TESTS_DIR = Path(__file__).resolve().parent
TIMM_TESTS = Path(os.environ.get("GPUNET_TIMM_TESTS") or ROOT / "build" / "timm-tests" / timm.__version__ / "tests")
# every timm test parametrised over registered models that applies to a GPUNet
PER_MODEL = ("test_model_forward", "test_model_backward", "test_model_default_cfgs", "test_model_load_pretrained",
             "test_model_features_pretrained", "test_model_forward_torchscript", "test_model_forward_features",
             "test_model_forward_intermediates_features", "test_model_forward_intermediates",
             "test_prune_intermediate_layers_contract", "test_model_forward_fx", "test_model_backward_fx",
             "test_model_forward_fx_torchscript")
# left out of the default run (node ids): timm runs the pruning sweep outside its CI too (~20 s a model);
# test_model_forward is two forwards at 320 px, and every other test runs the model as well
QUICK_DESELECTED = ("test_prune_intermediate_layers_contract[{model}]", "test_model_forward[1-{model}]")


def _run_timm_tests(tmp_path: Path, models: list[str], deselect: tuple[str, ...]) -> dict[str, set[str]]:
    """Run timm's test_models.py on `models`; returns test function -> models it PASSED for (asserts no failure)."""
    if not (TIMM_TESTS / "test_models.py").is_file():
        pytest.skip(f"timm's sdist tests not found at {TIMM_TESTS} (`make test` fetches them, or set "
                    "GPUNET_TIMM_TESTS)")
    mirror = tmp_path / "mirror"
    for name in models:
        save_zoo_mirror(gpunet.create_model(name), name, mirror)
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")  # neither our pyproject's options nor timm's
    tests = TIMM_TESTS / "test_models.py"
    deselected = [f"--deselect=test_models.py::{d.format(model=m)}" for d in deselect for m in models]
    with loopback_server(mirror) as url:
        env = {**os.environ, "GPUNET_NGC_MIRROR": url, "GPUNET_HOME": str(tmp_path / "home"),
               "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
               "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2"}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "_timm_plugin",
             "--import-mode=importlib", "-c", str(ini), "--rootdir", str(TIMM_TESTS), str(tests),
             "-k", " or ".join(models), *deselected],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    assert proc.returncode == 0, f"timm's tests failed ({summary}):\n{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}"
    passed: dict[str, set[str]] = {}
    for test, params in re.findall(r"^PASSED \S+::(\w+)\[([^\]]+)\]", proc.stdout, re.M):
        model = next((m for m in models if re.search(rf"(^|-){m}(\.|$|-)", params)), None)
        if model is not None:
            passed.setdefault(test, set()).add(model)
    print(f"timm {timm.__version__} tests/test_models.py on {', '.join(models)}: {summary}")
    return passed


def _assert_all_passed(passed: dict[str, set[str]], models: list[str], tests: tuple[str, ...]) -> None:
    missing = {test: sorted(set(models) - passed.get(test, set())) for test in tests}
    missing = {test: names for test, names in missing.items() if names}
    assert not missing, f"not collected or not passed (test -> models): {missing}"


def test_timm_generic_tests_on_gpunet_0(tmp_path: Path) -> None:
    passed = _run_timm_tests(tmp_path, ["gpunet_0"], QUICK_DESELECTED)
    left_out = {d.split("[")[0] for d in QUICK_DESELECTED}
    _assert_all_passed(passed, ["gpunet_0"], tuple(t for t in PER_MODEL if t not in left_out))


@pytest.mark.slow
def test_timm_generic_tests_on_all_seven(tmp_path: Path) -> None:
    models = gpunet.list_models()
    passed = _run_timm_tests(tmp_path, models, ())
    _assert_all_passed(passed, models, PER_MODEL)
