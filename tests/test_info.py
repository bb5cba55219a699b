"""`gpunet info`, `gpunet list`, `gpunet convert` and `count_macs` against NVIDIA's published numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import REFERENCE, ROOT, biased_model, save_ngc_zip, write_tiny_arch

import gpunet
from gpunet import cli
from gpunet.info import count_macs, count_params, describe

# NVIDIA's reference, measured on its own builder (shared/reference/models.json)
REFERENCE_NUMBERS = {  # name: (params, MACs at native resolution, MACs at 224)
    "gpunet_0": (11885432, 3254209280, 1584618944),
    "gpunet_1": (12704192, 3308369280, 1991001472),
    "gpunet_2": (25798704, 8386275920, 2779121360),
    "gpunet_p0": (22815080, 1870345792, 1870345792),
    "gpunet_p1": (39905672, 3241678272, 3241678272),
    "gpunet_d1": (10589859, 4289640427, 1002658288),
    "gpunet_d2": (19036728, 15739476160, 2811351776),
}


def test_reference_numbers_are_the_published_ones() -> None:
    path = REFERENCE / "models.json"
    if not path.exists():
        pytest.skip("shared/reference not available")
    models = json.loads(path.read_text())["models"]
    for name, (params, native, at224) in REFERENCE_NUMBERS.items():
        m = models[name]
        assert (m["num_params"], m["macs_native"], m["macs_224"]) == (params, native, at224), name


@pytest.mark.parametrize("name", list(REFERENCE_NUMBERS))
def test_count_macs_and_params_equal_nvidias(name: str) -> None:
    params, native, at224 = REFERENCE_NUMBERS[name]
    assert count_macs(name) == native
    assert count_macs(name, 224) == at224
    info = describe(name)
    assert info["params"] == params and info["macs"] == native and info["macs_224"] == at224
    assert sum(r["params"] for r in info["layers"]) == params  # every parameter belongs to one row
    assert sum(r["macs"] for r in info["layers"]) == native


def test_count_macs_on_a_real_model_and_any_size(tmp_path) -> None:
    arch = write_tiny_arch(tmp_path / "t.json")
    model = gpunet.create_model(arch)
    assert count_macs(model) == count_macs(arch) == count_macs(str(arch), 32)
    # by hand: stem 3x3 3->8 at 16x16; fused 3x3 8->16 + 1x1 16->8 at 16x16; irb 1x1 8->24 at 16x16,
    # dw 3x3 24 at 8x8, SE 24->2->24 (in/4) at 1x1, 1x1 24->16 at 8x8; head 1x1 16->32 at 8x8; linear 32->1000
    expected = (16 * 16 * 8 * 27 + 16 * 16 * (16 * 72 + 8 * 16) + 16 * 16 * 24 * 8 + 8 * 8 * 24 * 9
                + (2 * 24 + 24 * 2) + 8 * 8 * 16 * 24 + 8 * 8 * 32 * 16 + 32 * 1000)
    assert count_macs(model) == expected
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_describe_rows_for_gpunet_d1() -> None:
    info = describe("gpunet_d1")
    rows = info["layers"]
    assert len(rows) == 24 and rows[0]["type"] == "head" and rows[-1]["type"] == "tail"
    assert rows[0]["output_shape"] == [33, 228, 228]
    assert rows[-2]["output_shape"] == [268, 15, 15] and rows[-1]["output_shape"] == [1000]
    assert rows[9]["kernel"] == 7 and rows[9]["stride"] == 2 and rows[9]["hidden"] == 67 * 6
    assert all(r["act"] == "relu" for r in rows) and all(r["se"] is None for r in rows)
    assert info["pretrained_cfg"]["crop_pct"] == 1.0 and info["pretrained_cfg"]["top1"] == 82.5
    g0 = describe("gpunet_0")["layers"]
    assert [r["se"] for r in g0 if r["se"]] == [64, 176]
    assert {r["act"] for r in g0[1:-1]} == {"relu", "swish"}
    assert g0[3]["output_shape"] == [32, 79, 79]  # NVIDIA's stride-2 fused-block padding quirk: 160 -> 79


def test_info_through_the_installed_command() -> None:
    script = Path(sys.executable).parent / "gpunet"  # the console script from pyproject.toml
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "gpunet"]
    r = subprocess.run(cmd + ["info", "gpunet_d1", "--json"], capture_output=True, text=True, cwd=ROOT,
                       timeout=180, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model"] == "gpunet_d1" and info["params"] == REFERENCE_NUMBERS["gpunet_d1"][0]
    assert info["macs"] == REFERENCE_NUMBERS["gpunet_d1"][1] and len(info["layers"]) == 24
    assert info["layers"][-2]["output_shape"] == [268, 15, 15]
    assert info["pretrained_cfg"]["filename"] == "gpunet_d1_pyt_ckpt_21.12.0_amp.zip"


def test_list_table(capsys) -> None:
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "name", "res"] and len(lines) == 2 + 7
    d1 = next(line.split() for line in lines if line.startswith("gpunet_d1 "))
    assert d1[:3] == ["gpunet_d1", "GPUNet-D1", "456"] and "10.590" in d1 and "4.290" in d1 and "82.5" in d1
    assert "1.24" in d1 and "0.94" in d1


def test_info_text_list_json_and_errors_in_process(tmp_path, capsys) -> None:
    arch = write_tiny_arch(tmp_path / "tiny.json")
    assert cli.main(["info", str(arch), "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "input 3x64x64 (native 32)" in out and "pretrained config: none" in out
    assert out.splitlines()[4].split()[:3] == ["#", "stage", "type"]
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("GPUNet-D1") and "parameters 10,589,859" in out and "4,289,640,427" in out
    assert "gpunet_d1_pyt_ckpt_21.12.0_amp.zip" in out
    assert cli.main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(REFERENCE_NUMBERS)
    assert all((r["params"], r["macs"]) == REFERENCE_NUMBERS[r["name"]][:2] for r in rows)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"layer_type": "data", "img_resolution": 32, "distill": false}, {"layer_type": "nope"}]')
    assert cli.main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpunet: error: ") and "nope" in err and "Traceback" not in err
    assert cli.main(["info", "gpunet_x"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_convert_round_trip(tmp_path, capsys) -> None:
    arch = write_tiny_arch(tmp_path / "tiny.json")
    src = save_ngc_zip(biased_model(arch, [42, 7]), tmp_path / "ngc.zip", "tiny.pth.tar")
    dst = tmp_path / "tiny.safetensors"
    assert cli.main(["convert", str(src), str(dst), "--model", str(arch)]) == 0
    assert "gpunet-safetensors" in capsys.readouterr().out
    back = tmp_path / "back.pth.tar"
    assert cli.main(["convert", str(dst), str(back)]) == 0  # architecture from the safetensors metadata
    assert "nvidia-timm" in capsys.readouterr().out
    a = gpunet.create_model(arch, weights=src)
    b = gpunet.create_model(dst)
    c = gpunet.create_model(arch, weights=back)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and torch.equal(a(x), c(x))
    clf = gpunet.Classifier(dst, device="cpu")  # a .safetensors file carries its own weights
    assert clf.predict(x[0], top_k=2)[0].topk[0].index == 42


@pytest.mark.parametrize("size", [0, -5, 16, 5000])
def test_count_macs_and_describe_check_the_size(size: int) -> None:
    """0 used to mean "the model's size" (a silent default) and -5 ended in torch's negative-dimension error."""
    from gpunet.errors import SettingError

    with pytest.raises(SettingError, match=f"img_size {size} is (below|over)"):
        count_macs("gpunet_0", size)
    with pytest.raises(SettingError, match=f"img_size {size} is (below|over)"):
        describe("gpunet_0", size)
