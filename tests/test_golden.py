"""Golden numerics: NVIDIA-layout checkpoints of deterministic weights give NVIDIA's logits.

Uses ../shared/reference/golden (weights.py writes the checkpoints, <id>.expected.pt holds
what NVIDIA's own code computed); skipped when that folder is absent.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import gpunet

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_MODELS = ("gpunet_0", "gpunet_d1")
REL_TOL = 1e-5
RESOLUTION_KEYS = ("logits_native", "logits_224", "logits_257")


pytestmark = pytest.mark.usefixtures("single_thread_torch")

def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float((got.float() - ref).abs().max() / ref.abs().max())


def make_input(res: int) -> torch.Tensor:
    torch.manual_seed(0)  # the recipe of the expected files
    return torch.randn(2, 3, res, res)


@pytest.fixture(scope="module")
def golden_dir(shared_reference: Path) -> Path:
    path = shared_reference / "golden"
    if not (path / "weights.py").is_file():
        pytest.skip(f"golden folder not available at {path}")
    return path


@pytest.fixture(scope="module")
def golden_weights(golden_dir: Path) -> ModuleType:
    """golden/weights.py, imported from its path (it is not a package)."""
    spec = importlib.util.spec_from_file_location("gpunet_golden_weights", golden_dir / "weights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class GoldenCase:
    """The expected outputs and NVIDIA-layout checkpoints of one model, written once per module."""

    def __init__(self, name: str, expected: dict[str, Any], pth: Path, zip_path: Path, tsv: Path) -> None:
        self.name, self.expected, self.pth, self.zip, self.tsv = name, expected, pth, zip_path, tsv
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The model loaded from the NGC zip (built once; eval mode)."""
        if self._model is None:
            self._model = gpunet.create_model(self.name, weights=self.zip).eval()
        return self._model

    def resolution(self, key: str) -> int:
        return {"logits_native": self.expected["img_resolution"], "logits_224": 224, "logits_257": 257}[key]


@pytest.fixture(scope="module")
def golden_cases(golden_dir: Path, golden_weights: ModuleType, shared_reference: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, GoldenCase]:
    cases = {}
    tmp = tmp_path_factory.mktemp("golden")
    for name in GOLDEN_MODELS:
        expected_path = golden_dir / f"{name}.expected.pt"
        if not expected_path.is_file():
            continue
        # the reference file holds only tensors, strings, numbers and dicts of them
        expected = torch.load(expected_path, weights_only=True)
        tsv = shared_reference / "state_dict" / f"{name}.tsv"
        latency = expected["latency_key"]
        pth = tmp / f"{latency}.pth.tar"
        golden_weights.write_golden_checkpoint(str(tsv), str(pth), "timm", arch=name, realistic=True)
        zip_path = tmp / f"gpunet_{name}_ngc.zip"
        golden_weights.make_ngc_zip(str(pth), str(zip_path), latency)
        cases[name] = GoldenCase(name, expected, pth, zip_path, tsv)
    return cases


def _case(golden_cases: dict[str, GoldenCase], name: str) -> GoldenCase:
    if name not in golden_cases:
        pytest.skip(f"no expected outputs for {name}")
    return golden_cases[name]


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_weights_reproducible(golden_cases: dict[str, GoldenCase], golden_weights: ModuleType,
                                     name: str) -> None:
    case = _case(golden_cases, name)
    sd = golden_weights.make_state_dict(str(case.tsv), 1)
    assert golden_weights.fingerprint(sd) == case.expected["weights_fingerprint"][1]
    assert case.expected["img_resolution"] == gpunet.get_pretrained_config(name).input_size[-1]
    assert case.expected["latency_key"] == gpunet.get_pretrained_config(name).nvidia_key


@pytest.mark.parametrize("key", RESOLUTION_KEYS)
@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_logits_from_ngc_zip(golden_cases: dict[str, GoldenCase], name: str, key: str) -> None:
    case = _case(golden_cases, name)
    with torch.no_grad():
        got = case.model(make_input(case.resolution(key)))
    assert rel_err(got, case.expected[key]) <= REL_TOL


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_logits_from_bare_file(golden_cases: dict[str, GoldenCase], name: str) -> None:
    case = _case(golden_cases, name)
    model = gpunet.create_model(name, weights=case.pth)
    assert not model.training
    with torch.no_grad():
        got = model(make_input(224))
    assert rel_err(got, case.expected["logits_224"]) <= REL_TOL


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_non_ema_weights_differ(golden_cases: dict[str, GoldenCase], golden_weights: ModuleType,
                                       tmp_path: Path, name: str) -> None:
    """The timm file's `state_dict` (decoy, seed 2) gives other logits: the loader must take the EMA set."""
    case = _case(golden_cases, name)
    nonema = case.expected["logits_native_nonema"]
    assert rel_err(nonema, case.expected["logits_native"]) > 100 * REL_TOL  # the check can tell them apart
    # loading the decoy weights (as a bare state dict) reproduces exactly NVIDIA's non-EMA logits
    decoy = tmp_path / "decoy.pth"
    golden_weights.write_checkpoint(golden_weights.make_state_dict(str(case.tsv), 2), None, str(decoy),
                                    "raw_state_dict")
    model = gpunet.create_model(name, weights=decoy)
    with torch.no_grad():
        got = model(make_input(case.expected["img_resolution"]))
    assert rel_err(got, nonema) <= REL_TOL
    assert rel_err(got, case.expected["logits_native"]) > 100 * REL_TOL


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_logits_image(golden_cases: dict[str, GoldenCase], golden_dir: Path, name: str) -> None:
    """The test image through gpunet.eval_transform and the model gives NVIDIA's logits."""
    from PIL import Image

    case = _case(golden_cases, name)
    if "logits_image" not in case.expected:
        pytest.skip("no logits_image in the expected file")
    with Image.open(golden_dir / "test_image.png") as image:
        x = gpunet.eval_transform(name)(image.convert("RGB"))
    assert x.shape == (3, case.expected["img_resolution"], case.expected["img_resolution"])
    with torch.no_grad():
        got = case.model(x.unsqueeze(0))
    # bicubic resampling may differ by a uint8 level here and there: looser than the logits tolerance
    assert rel_err(got, case.expected["logits_image"]) <= 1e-3


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_features_from_ngc_zip(golden_cases: dict[str, GoldenCase], name: str) -> None:
    """A features_only backbone takes the backbone part of NVIDIA's classifier checkpoint."""
    case = _case(golden_cases, name)
    feats = gpunet.create_model(name, features_only=True, weights=case.zip)
    x = make_input(96)
    with torch.no_grad():
        got = feats(x)
        h = case.model.stem(x)
        ref = []
        for stage in case.model.stages:
            h = stage(h)
            ref.append(h)
    assert len(got) == len(feats.out_indices)
    for out, i in zip(got, feats.out_indices, strict=True):
        torch.testing.assert_close(out, ref[i], rtol=0, atol=0)


def _run_check(*args: str) -> subprocess.CompletedProcess[str]:
    script = REPO_ROOT / ".." / "shared" / "reference" / "golden" / "check.py"
    if not script.is_file():
        pytest.skip(f"{script} not available")
    return subprocess.run([sys.executable, str(Path("..") / "shared" / "reference" / "golden" / "check.py"),
                           *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_check_script_preprocess(shared_reference: Path) -> None:
    """check.py runs against the package (logits are checked in-process above; all of it in the slow test)."""
    proc = _run_check("--preprocess", "--no-logits")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert "golden: 1/1" in proc.stdout


@pytest.mark.slow  # ~20 s alone on 2 cores (both models, two checkpoint forms, three resolutions)
def test_check_script_all(shared_reference: Path) -> None:
    proc = _run_check("--preprocess")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    done, total = last.split()[1].split("/")
    assert done == total and int(total) >= 5
