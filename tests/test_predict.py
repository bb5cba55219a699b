"""`gpunet predict` and `gpunet.Classifier`, end to end through the real command line."""

from __future__ import annotations

import csv
import io
import json
import socket
import time
from pathlib import Path

import pytest
import torch
from _helpers import (
    ROOT,
    biased_model,
    loopback_server,
    odd_mode_images,
    run_cli,
    save_ngc_zip,
    save_zoo_mirror,
    write_tiny_arch,
)
from PIL import Image

import gpunet
from gpunet import cli
from gpunet.labels import imagenet_labels, imagenet_synsets

ORDER = [207, 1, 954, 3, 4]  # golden retriever, goldfish, banana, ...
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny JSON architecture with two checkpoints: input-independent (known answer) and random."""
    d = tmp_path_factory.mktemp("tiny")
    arch = write_tiny_arch(d / "tiny.json")
    known = save_ngc_zip(biased_model(arch, ORDER), d / "known.zip", "tiny.pth.tar")
    torch.manual_seed(1)
    model = gpunet.create_model(arch)
    with torch.no_grad():
        model.classifier.weight.mul_(20)  # spread the probabilities so inputs matter
    rand = save_ngc_zip(model, d / "random.zip", "tiny.pth.tar")
    ten = save_ngc_zip(biased_model(arch, [7, 2], num_classes=10), d / "ten.zip", "tiny.pth.tar")
    return {"arch": arch, "known": known, "random": rand, "ten": ten, "dir": d}


def _probs(order_bias: torch.Tensor) -> torch.Tensor:
    return order_bias.softmax(0)


def test_readme_command_with_a_loopback_mirror(tmp_path) -> None:
    """`gpunet predict examples/ --model gpunet_d1 --pretrained`, the NGC zip served from 127.0.0.1."""
    model = biased_model("gpunet_d1", ORDER)
    probs = _probs(model.classifier.bias.detach())
    save_zoo_mirror(model, "gpunet_d1", tmp_path / "mirror")
    home = tmp_path / "home"
    with loopback_server(tmp_path / "mirror") as url:
        r = run_cli(["predict", "examples/", "--model", "gpunet_d1", "--pretrained", "--format", "json",
                     "--top-k", "3"], env={"GPUNET_NGC_MIRROR": url, "GPUNET_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    files = sorted(str(p.relative_to(ROOT)) for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    assert sorted(x["file"] for x in out["results"]) == files and len(files) >= 3
    assert out["model"] == "gpunet_d1" and out["img_size"] == 456
    for res in out["results"]:
        assert res["error"] is None
        assert [t["index"] for t in res["topk"]] == ORDER[:3]
        assert res["topk"][0]["class_id"] == imagenet_synsets()[207] == "n02099601"
        assert res["topk"][0]["label"] == imagenet_labels()[207]
        assert [t["prob"] for t in res["topk"]] == pytest.approx([float(probs[k]) for k in ORDER[:3]], rel=1e-4)
    cached = home / "checkpoints" / gpunet.get_pretrained_config("gpunet_d1").filename
    assert cached.is_file()  # downloaded once into the cache


def test_no_network_explains_and_exits_nonzero(tmp_path) -> None:
    with socket.socket() as s:  # a port nobody listens on: the download fails like an offline machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli(["predict", "examples/", "--model", "gpunet_d1", "--pretrained"],
                env={"GPUNET_NGC_MIRROR": f"http://127.0.0.1:{port}", "GPUNET_HOME": str(tmp_path)})
    assert r.returncode == 2
    assert r.stdout == ""  # no predictions at all
    err = r.stderr
    assert "Traceback" not in err and err.count("gpunet: error:") == 1
    assert "\n\n" not in err.strip()  # one paragraph
    cfg = gpunet.get_pretrained_config("gpunet_d1")
    for needle in (f"127.0.0.1:{port}/{cfg.filename}", "NGC", "NVIDIA's terms", "--weights PATH",
                   "GPUNET_NGC_MIRROR", cfg.filename, "random weights"):
        assert needle in " ".join(err.split()), needle


def test_files_folders_globs_odd_modes_and_failures(tiny, tmp_path) -> None:
    files = odd_mode_images(tmp_path / "odd")
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.new("RGB", (50, 40), (10, 200, 30)).save(extra / "green.jpg")
    Image.new("RGB", (50, 40), (10, 20, 230)).save(extra / "blue.jpg")
    (extra / "readme.txt").write_text("ignored by the glob")
    single = tmp_path / "single.bmp"
    Image.new("RGB", (20, 20), "white").save(single)
    r = run_cli(["predict", tmp_path / "odd", str(extra / "*.jpg"), single, tmp_path / "missing.jpg",
                 "--model", tiny["arch"], "--weights", tiny["known"], "--format", "csv", "--batch-size", "4"])
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    by_file: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_file.setdefault(Path(row["file"]).name, []).append(row)
    good = [p.name for k, p in files.items() if k not in ("corrupt", "not_image")] + ["green.jpg", "blue.jpg",
                                                                                      "single.bmp"]
    assert set(by_file) == set(good) | {"truncated.jpg", "notes.png"}
    for name in good:
        assert [int(x["index"]) for x in by_file[name]] == ORDER, name
        assert by_file[name][0]["label"] == imagenet_labels()[ORDER[0]]
        assert all(x["error"] == "" for x in by_file[name])
    for bad in ("truncated.jpg", "notes.png"):
        assert len(by_file[bad]) == 1 and by_file[bad][0]["error"] and by_file[bad][0]["rank"] == ""
    assert "truncated" in by_file["truncated.jpg"][0]["error"]
    assert "not an image" in by_file["notes.png"][0]["error"]
    summary = r.stderr[r.stderr.index("inputs failed"):]
    for name in ("truncated.jpg", "notes.png", "missing.jpg"):
        assert name in summary
    assert "3 of 14 inputs failed" in r.stderr


def test_table_and_json_formats_in_process(tiny, tmp_path, capsys) -> None:
    img = tmp_path / "a.png"
    Image.new("LA", (30, 20), (90, 128)).save(img)
    assert cli.main(["predict", str(img), "--model", str(tiny["arch"]), "--weights", str(tiny["known"]),
                     "-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(img)
    assert out[1].split()[:3] == ["1", out[1].split()[1], imagenet_synsets()[ORDER[0]]]
    assert out[1].endswith(imagenet_labels()[ORDER[0]]) and out[2].endswith(imagenet_labels()[ORDER[1]])
    assert len(out) == 3
    assert cli.main(["predict", str(img), "--model", str(tiny["arch"]), "--weights", str(tiny["known"]),
                     "--format", "json", "-k", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["results"][0]["topk"][0]["index"] == ORDER[0] and data["weights"] == str(tiny["known"])


def test_refuses_random_weights_unless_asked(tiny, tmp_path, capsys) -> None:
    img = tmp_path / "a.png"
    Image.new("RGB", (30, 20), "red").save(img)
    assert cli.main(["predict", str(img), "--model", str(tiny["arch"])]) == 2
    err = capsys.readouterr().err
    assert "meaningless" in err and "--pretrained" in err and "--weights" in err and "--random-weights" in err
    assert cli.main(["predict", str(img), "--model", str(tiny["arch"]), "--random-weights"]) == 0
    captured = capsys.readouterr()
    assert "RANDOM" in captured.out and "MEANINGLESS" in captured.err
    # user errors are one line, no traceback
    assert cli.main(["predict", str(img), "--model", "gpunet_d9", "--random-weights"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpunet: error: unknown model 'gpunet_d9'") and "Traceback" not in err
    assert cli.main(["predict", str(img), "--model", str(tiny["arch"]), "--weights", str(tmp_path / "no.zip")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path / "nothing"), "--model", str(tiny["arch"]), "--random-weights"]) == 1
    assert "no images to classify" in capsys.readouterr().err


def test_classifier_api_paths_pil_and_tensors(tiny, tmp_path) -> None:
    clf = gpunet.Classifier(tiny["arch"], weights=tiny["random"], device="cpu", batch_size=2)
    images = [Image.new("RGB", (40, 30), c) for c in ("red", "navy", "yellow")]
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    by_path = clf.predict(paths, top_k=3)
    by_pil = clf.predict(images, top_k=3)
    batch = torch.stack([clf.transform(im) for im in images])
    by_tensor = clf.predict(batch, top_k=3)
    single = clf.predict(images[1].convert("P"), top_k=3)
    assert len(by_path) == len(by_pil) == len(by_tensor) == 3 and len(single) == 1
    for a, b, c in zip(by_path, by_pil, by_tensor, strict=True):
        assert [t.index for t in a.topk] == [t.index for t in b.topk] == [t.index for t in c.topk]
        assert [t.prob for t in a.topk] == pytest.approx([t.prob for t in c.topk], abs=1e-5)
        assert a.label == imagenet_labels()[a.index] and 0 < a.prob <= 1
    assert by_path[0].source == str(paths[0]) and by_tensor[0].source == "<tensor 0>"
    assert single[0].index == by_pil[1].index
    # the probabilities are the softmax of the model's logits
    with torch.no_grad():
        logits = clf.model(batch)
    assert by_tensor[2].prob == pytest.approx(float(logits.softmax(1)[2].max()), abs=1e-5)
    # a bad file is reported, not raised
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    res = clf.predict([bad, paths[0]])
    assert not res[0].ok and res[0].topk == [] and res[1].ok
    with pytest.raises(ValueError, match="bad.jpg"):
        _ = res[0].label


def test_classifier_api_numpy_arrays_and_file_bytes(tiny, tmp_path) -> None:
    """uint8 RGB arrays (one, a stack, grayscale) and a file's bytes give exactly the PIL image's / the file's
    probabilities; an array of another dtype or something that is no input at all is named (both used to end in
    AttributeError / TypeError, bytes were iterated as ints)."""
    import numpy as np

    from gpunet.errors import SettingError

    clf = gpunet.Classifier(tiny["arch"], weights=tiny["random"], device="cpu", batch_size=2)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(3)]
    images = [Image.fromarray(a) for a in arrays]
    images[0].save(tmp_path / "0.png")

    def probs(preds: list) -> list[list[float]]:
        assert all(p.ok for p in preds), [p.error for p in preds]
        return [[t.prob for t in p.topk] for p in preds]

    assert probs(clf.predict(arrays, top_k=3)) == probs(clf.predict(images, top_k=3))
    assert probs(clf.predict(np.stack(arrays), top_k=3)) == probs(clf.predict(images, top_k=3))
    gray = arrays[1][..., 0]
    assert probs(clf.predict(gray)) == probs(clf.predict(Image.fromarray(gray)))
    assert probs(clf.predict(gray[..., None])) == probs(clf.predict(Image.fromarray(gray)))
    assert probs(clf.predict(arrays[2], top_k=2)) == probs(clf.predict(images[2], top_k=2))
    data = (tmp_path / "0.png").read_bytes()
    by_bytes = clf.predict(data)
    assert by_bytes[0].source == "<bytes 0>" and probs(by_bytes) == probs(clf.predict(tmp_path / "0.png"))
    assert probs(clf.predict([bytearray(data), memoryview(data)])) == probs(clf.predict([tmp_path / "0.png"] * 2))

    mixed = clf.predict([arrays[0].astype(np.float32), b"not an image", None, arrays[0]])
    assert "expected a uint8 numpy image" in mixed[0].error and "float32 (30, 40, 3)" in mixed[0].error
    assert mixed[1].error == "not an image file (or a format Pillow cannot read)"
    (tmp_path / "empty.png").touch()
    assert clf.predict(tmp_path / "empty.png")[0].error == "empty file (0 bytes)"  # was: "not an image file"
    assert mixed[2].source == "<NoneType 2>" and mixed[2].error.startswith("unsupported input NoneType: expected")
    assert mixed[3].ok
    with pytest.raises(SettingError, match="inputs: expected image paths or URLs, .* got int"):
        clf.predict(5)


def test_images_by_url_from_a_loopback_server(tiny, tmp_path, capsys, monkeypatch) -> None:
    """http and file URLs are classified like the files they serve (exactly the same probabilities); a 404, a
    refused connection and a silent server are errors on those inputs only, within the stall timeout."""
    from _servers import closed_port, file_server

    monkeypatch.setenv("GPUNET_DOWNLOAD_STALL_TIMEOUT", "1")
    clf = gpunet.Classifier(tiny["arch"], weights=tiny["random"], device="cpu", batch_size=2)
    images = {f"{name}.png": Image.new("RGB", (40, 30), name) for name in ("red", "navy", "yellow")}
    files = {}
    for name, im in images.items():
        im.save(tmp_path / name)
        files[name] = (tmp_path / name).read_bytes()
    with file_server(files, chunk_size=97) as server:  # small chunks: the body arrives in many reads
        urls = [server.url(n) for n in files]
        by_url = clf.predict([*urls, server.url("missing.png"), f"http://127.0.0.1:{closed_port()}/x.png",
                              (tmp_path / "red.png").as_uri()])
        by_path = clf.predict([tmp_path / n for n in files])
        assert [p.source for p in by_url[:3]] == urls
        assert [[t.prob for t in p.topk] for p in by_url[:3]] == [[t.prob for t in p.topk] for p in by_path]
        assert by_url[3].error == "HTTP 404 no such file" and not by_url[4].ok
        alone = clf.predict(tmp_path / "red.png")[0]  # batch of one, like the file:// URL in its batch
        assert [t.prob for t in by_url[5].topk] == [t.prob for t in alone.topk]
        assert cli.main(["predict", urls[1], "--model", str(tiny["arch"]), "--weights", str(tiny["random"]),
                         "--device", "cpu", "-k", "1", "--format", "json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["results"][0]["file"] == urls[1] and out["results"][0]["topk"][0]["index"] == by_path[1].index
    with file_server(files, silent=True, max_seconds=10) as silent:
        start = time.monotonic()
        stalled = clf.predict(silent.url("red.png"))[0]
        assert "stalled" in stalled.error and "GPUNET_DOWNLOAD_STALL_TIMEOUT" in stalled.error
        assert time.monotonic() - start < 8


def test_fetch_refuses_a_body_over_the_limit() -> None:
    """Declared (Content-Length) or streamed (no length): refused once over `max_bytes`, not held in memory."""
    from _servers import file_server

    from gpunet import DownloadError, hub

    body = bytes(range(256)) * 64  # 16 KiB
    with file_server({"big.bin": body}, chunk_size=1024) as server:
        assert hub.fetch(server.url("big.bin"), max_bytes=len(body)) == body
        with pytest.raises(DownloadError, match=r"big\.bin: 16,384 bytes, over the limit of 4,096"):
            hub.fetch(server.url("big.bin"), max_bytes=4096)
        server.send_length = False
        with pytest.raises(DownloadError, match=r"big\.bin: more than the limit of 4,096 bytes"):
            hub.fetch(server.url("big.bin"), max_bytes=4096)
        server.send_length, server.cut_at = True, 5000  # declared 16 KiB, then hangs up
        with pytest.raises(DownloadError, match=r"big\.bin: the body ended after 5,000 of 16,384 bytes"):
            hub.fetch(server.url("big.bin"), max_bytes=len(body))


def test_class_count_follows_the_checkpoint(tiny, tmp_path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(10)) + "\n")
    clf = gpunet.Classifier(tiny["arch"], weights=tiny["ten"], device="cpu",
                            labels=gpunet.labels.read_labels_file(labels))
    assert clf.num_classes == 10
    p = clf.predict(Image.new("RGB", (32, 32)), top_k=2)[0]
    assert [t.index for t in p.topk] == [7, 2] and p.label == "thing 7"
    with pytest.raises(gpunet.WeightsError, match="10 classes"):
        gpunet.classify.load_model(tiny["arch"], weights=tiny["ten"], num_classes=1000)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_requested_without_a_gpu(tiny, tmp_path, capsys) -> None:
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    assert cli.main(["predict", str(img), "--model", str(tiny["arch"]), "--random-weights", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_amp_and_channels_last_on_cpu(tiny) -> None:
    image = Image.new("RGB", (40, 30), "orange")
    ref = gpunet.Classifier(tiny["arch"], weights=tiny["known"], device="cpu").predict(image)[0]
    fast = gpunet.Classifier(tiny["arch"], weights=tiny["known"], device="cpu", amp=True,  # bf16 on CPU
                             channels_last=True).predict(image)[0]
    assert [t.index for t in fast.topk] == [t.index for t in ref.topk] == ORDER
    assert fast.prob == pytest.approx(ref.prob, rel=0.05)
