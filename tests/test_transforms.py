"""Preprocessing bound to the weights: eval_transform against timm's own transform, every PIL mode,
EXIF orientation, and NVIDIA's preprocessing of the golden test image."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import timm
import torch
from _helpers import REFERENCE, odd_mode_images, rgb_array
from PIL import Image
from timm.data import create_transform, resolve_data_config

import gpunet
from gpunet import eval_transform, to_rgb


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(rgb_array(203, 151, seed=7))  # odd, non-square size: exercises rounding


@pytest.mark.parametrize("name", ["gpunet_d1", "gpunet_p0"])  # crop_pct 1.0 and 0.875
def test_matches_timm_transform_of_the_zoo_model(name: str, photo: Image.Image) -> None:
    model = timm.create_model(name)  # registered by `import gpunet`; carries the pretrained config
    config = resolve_data_config({}, model=model)
    cfg = gpunet.get_pretrained_config(name)
    assert config["input_size"] == cfg.input_size and config["crop_pct"] == cfg.crop_pct
    assert config["interpolation"] == "bicubic"
    reference = create_transform(**config)(photo)
    for source in (name, model):
        ours = eval_transform(source)(photo)
        assert ours.shape == (3, cfg.input_size[1], cfg.input_size[2])
        assert torch.equal(ours, reference)


def test_matches_an_independent_recipe(photo: Image.Image) -> None:
    """floor(R / crop_pct) shorter side, bicubic, center crop, /255, (x - mean) / std, done by hand."""
    res, pct = 224, 0.875
    short = math.floor(res / pct)  # 256
    w, h = photo.size
    resized = photo.resize((int(short * w / h), short), Image.Resampling.BICUBIC)
    left, top = int(round((resized.width - res) / 2)), int(round((resized.height - res) / 2))
    crop = np.asarray(resized.crop((left, top, left + res, top + res)), dtype=np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1).astype(np.float32))
    ours = eval_transform("gpunet_p1")(photo)
    assert torch.allclose(ours, expected, atol=1e-5)
    # overrides
    assert eval_transform("gpunet_d1", img_size=64)(photo).shape == (3, 64, 64)


def test_golden_nvidia_preprocessing() -> None:
    golden = REFERENCE / "golden" / "preprocess_gpunet_d1.pt"
    if not golden.exists():
        pytest.skip("reference golden files not available")
    ref = torch.load(golden, weights_only=True)["tensor"]
    with Image.open(REFERENCE / "golden" / "test_image.png") as im:
        ours = eval_transform("gpunet_d1")(im)
    assert (ours - ref).abs().max() <= 1e-6


def test_every_mode_becomes_rgb(tmp_path) -> None:
    files = odd_mode_images(tmp_path)
    for mode in ("RGB", "L", "LA", "RGBA", "P", "CMYK", "I;16", "I"):
        with Image.open(files[mode]) as im:
            assert im.mode == mode, (mode, im.mode)
            rgb = to_rgb(im)
            assert rgb.mode == "RGB" and rgb.size == (40, 30)
            x = eval_transform("gpunet_0", img_size=32)(im)
            assert x.shape == (3, 32, 32) and torch.isfinite(x).all()


def test_alpha_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black -> mid gray
    out = np.asarray(to_rgb(rgba))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[0, 2])
    la = Image.new("LA", (2, 1), (10, 0))
    assert tuple(np.asarray(to_rgb(la))[0, 0]) == (255, 255, 255)
    p = Image.new("P", (2, 1), 0)
    p.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0  # index 0 transparent
    assert [tuple(v) for v in np.asarray(to_rgb(p))[0]] == [(255, 255, 255), (0, 255, 0)]
    # opaque modes keep their colours
    assert tuple(np.asarray(to_rgb(Image.new("L", (1, 1), 77)))[0, 0]) == (77, 77, 77)
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red in CMYK
    assert tuple(np.asarray(to_rgb(cmyk))[0, 0]) == (255, 0, 0)


def test_high_bit_depth_gray_uses_the_full_range() -> None:
    a16 = np.array([[0, 1000, 65535]], dtype=np.uint16)
    out = np.asarray(to_rgb(Image.fromarray(a16)))[0, :, 0]
    assert out.tolist() == [0, round(1000 * 255 / 65535), 255]
    a32 = np.array([[-5000, 0, 15000]], dtype=np.int32)
    assert np.asarray(to_rgb(Image.fromarray(a32)))[0, :, 0].tolist() == [0, 64, 255]


def test_exif_orientation_is_honoured() -> None:
    upright = Image.new("RGB", (30, 60), (255, 0, 0))  # portrait: red top, blue bottom
    upright.paste((0, 0, 255), (0, 30, 30, 60))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 60x30 as the camera wrote it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.size == (60, 30)
        rgb = to_rgb(im)
        got = eval_transform("gpunet_0", img_size=32, crop_pct=1.0)(im)
    assert rgb.size == (30, 60)
    top, bottom = np.asarray(rgb)[5, 15], np.asarray(rgb)[55, 15]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        manual = Image.fromarray(np.asarray(im.transpose(Image.Transpose.ROTATE_270)))  # orientation 6; no EXIF
    assert torch.equal(got, eval_transform("gpunet_0", img_size=32, crop_pct=1.0)(manual))
