"""`gpunet validate` and `gpunet.validate`: accuracy that the tests know in advance or recompute."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from _helpers import (
    biased_model,
    loopback_server,
    make_image_folder,
    run_cli,
    save_ngc_zip,
    save_zoo_mirror,
    write_tiny_arch,
)

import gpunet
from gpunet import cli
from gpunet.data import ImageFolder
from gpunet.errors import SettingError
from gpunet.evaluate import ValidationResult, append_results
from gpunet.labels import imagenet_synsets

SYN = imagenet_synsets()


def _expected_loss(bias: torch.Tensor, targets: list[int]) -> float:
    lse = float(torch.logsumexp(bias.double(), 0))
    return sum(lse - float(bias[t]) for t in targets) / len(targets)


def test_known_answer_through_the_cli_with_a_loopback_mirror(tmp_path) -> None:
    """Classifier weight 0, bias ranks [1, 207, 500, 501, 502]: the answer is known for every image."""
    counts = {SYN[0]: 4, SYN[1]: 3, SYN[207]: 2}  # ImageNet synset folders -> classes 0, 1, 207
    make_image_folder(tmp_path / "val", counts)
    order = [1, 207, 500, 501, 502]
    model = biased_model("gpunet_d1", order)
    bias = model.classifier.bias.detach().clone()
    save_zoo_mirror(model, "gpunet_d1", tmp_path / "mirror")
    results = tmp_path / "results.json"
    with loopback_server(tmp_path / "mirror") as url:
        r = run_cli(["validate", tmp_path / "val", "--model", "gpunet_d1", "--pretrained", "--img-size", "64",
                     "--batch-size", "4", "--workers", "2", "--device", "cpu", "--results-file", results],
                    env={"GPUNET_NGC_MIRROR": url, "GPUNET_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr
    [res] = json.loads(results.read_text())
    targets = [0] * 4 + [1] * 3 + [207] * 2
    assert res["count"] == 9 and res["model"] == "gpunet_d1" and res["img_size"] == 64
    assert res["imagenet_classes"] is True and res["num_classes"] == 1000 and res["crop_pct"] == 1.0
    assert res["top1"] == pytest.approx(100 * 3 / 9)  # only class 1 is ever first
    assert res["top5"] == pytest.approx(100 * 5 / 9)  # classes 1 and 207 are in the top 5, class 0 is not
    assert res["loss"] == pytest.approx(_expected_loss(bias, targets), rel=1e-5)
    assert res["images_per_s"] > 0 and res["failed"] == []
    assert "top1        33.333 %" in r.stdout and "top5        55.556 %" in r.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny_val")
    arch = write_tiny_arch(d / "tiny.json")
    files = make_image_folder(d / "pets", {"cats": 5, "dogs": 4, "zebras": 3}, seed=10)
    torch.manual_seed(3)
    model = gpunet.create_model(arch, num_classes=3)
    with torch.no_grad():
        model.classifier.weight.mul_(30)
    rand = save_ngc_zip(model, d / "random3.zip", "x.pth.tar")
    known = save_ngc_zip(biased_model(arch, [2, 0, 1], num_classes=3), d / "known3.zip", "x.pth.tar")
    return {"arch": arch, "data": d / "pets", "random": rand, "known": known, "files": files, "dir": d}


def test_matches_an_independent_computation_with_the_python_api(tiny) -> None:
    result = gpunet.validate(tiny["arch"], tiny["data"], weights=tiny["random"], batch_size=5, workers=0,
                             device="cpu", progress=False)
    clf = gpunet.Classifier(tiny["arch"], weights=tiny["random"], device="cpu")
    targets, hits, losses = [], 0, []
    for cls_index, cls in enumerate(["cats", "dogs", "zebras"]):
        for path in tiny["files"][cls]:
            [p] = clf.predict(path, top_k=3)
            hits += p.index == cls_index
            targets.append(cls_index)
            losses.append(-math.log(next(t.prob for t in p.topk if t.index == cls_index)))
    assert isinstance(result, ValidationResult) and result.count == 12 and result.num_classes == 3
    assert result.imagenet_classes is False
    assert result.top1 == pytest.approx(100 * hits / 12)
    assert 0 < hits < 12  # a non-trivial case
    assert result.top5 == 100.0  # 3 classes: always in the top 5
    assert result.loss == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def test_custom_classes_known_answer_csv_and_failures(tiny, tmp_path, capsys) -> None:
    data = tmp_path / "pets"
    make_image_folder(data, {"cats": 2, "dogs": 3, "zebras": 1}, seed=20)
    (data / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "res.csv"
    args = ["validate", str(data), "--model", str(tiny["arch"]), "--weights", str(tiny["known"]), "--workers", "0",
            "--results-file", str(out), "--device", "cpu"]
    assert cli.main(args) == 1  # one unreadable image: reported, skipped, non-zero exit
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "1 images could not be read" in captured.err
    assert "top1        16.667 %" in captured.out  # class 2 (zebras) is always first: 1 of 6
    (data / "dogs" / "broken.jpg").unlink()
    assert cli.main(args[:-4] + ["--results-file", str(out), "--limit", "3", "--format", "json"]) == 0
    limited = json.loads(capsys.readouterr().out)
    assert limited["count"] == 3 and limited["top1"] == 0.0  # samples 0, 2, 4 of 6: cats, dogs, dogs
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and out.read_text().count("top1") == 1  # header once
    assert float(rows[0]["top1"]) == pytest.approx(100 / 6) and rows[0]["failed"] == "1"
    assert rows[0]["count"] == "6" and rows[1]["count"] == "3"


def test_errors_are_clear(tiny, tmp_path, capsys) -> None:
    assert cli.main(["validate", str(tmp_path / "nope"), "--model", str(tiny["arch"]), "--random-weights"]) == 2
    assert "no such folder" in capsys.readouterr().err
    # three non-synset folders need a 3-class checkpoint, not a 1000-class one
    k1000 = save_ngc_zip(biased_model(tiny["arch"], [1]), tmp_path / "k1000.zip", "x.pth.tar")
    assert cli.main(["validate", str(tiny["data"]), "--model", str(tiny["arch"]), "--weights", str(k1000)]) == 2
    err = capsys.readouterr().err
    assert "1000 classes but 3 are needed" in err and "Traceback" not in err
    # ImageNet synset folders need a 1000-class model
    (tmp_path / "inet" / SYN[5]).mkdir(parents=True)
    make_image_folder(tmp_path / "inet", {SYN[5]: 1})
    assert cli.main(["validate", str(tmp_path / "inet"), "--model", str(tiny["arch"]), "--weights",
                     str(tiny["known"])]) == 2
    assert "1000 needed" in capsys.readouterr().err
    assert cli.main(["validate", str(tiny["data"]), "--model", str(tiny["arch"])]) == 2
    assert "meaningless" in capsys.readouterr().err


def test_image_folder_mapping_and_limit(tmp_path) -> None:
    make_image_folder(tmp_path / "a", {SYN[3]: 2, SYN[999]: 1})
    ds = ImageFolder(tmp_path / "a")
    assert ds.imagenet and ds.class_to_idx == {SYN[3]: 3, SYN[999]: 999} and len(ds) == 3
    make_image_folder(tmp_path / "b", {"b_cls": 4, "a_cls": 4, SYN[3]: 4})  # mixed: plain sorted names
    ds = ImageFolder(tmp_path / "b", limit=3)
    assert not ds.imagenet and ds.class_to_idx == {"a_cls": 0, "b_cls": 1, SYN[3]: 2}
    assert sorted(t for _, t in ds.samples) == [0, 1, 2] and ds.total == 12


def test_append_results_json_and_csv_columns(tmp_path) -> None:
    j = tmp_path / "r.json"
    append_results(j, {"model": "a", "top1": 1.0})
    append_results(j, {"model": "b", "top1": 2.0})
    assert [r["model"] for r in json.loads(j.read_text())] == ["a", "b"]
    c = tmp_path / "r.csv"
    append_results(c, {"model": "a", "top1": 1.0})
    append_results(c, {"model": "b", "top1": 2.0, "extra": "x"})  # a new column: rewritten with the union
    with open(c, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["extra"]) for r in rows] == [("a", ""), ("b", "x")]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        append_results(bad, {"model": "a"})
    assert bad.read_text() == "{not json"


def test_amp_channels_last_and_workers(tiny) -> None:
    result = gpunet.validate(tiny["arch"], tiny["data"], weights=tiny["known"], amp=True, channels_last=True,
                             workers=2, batch_size=4, device="cpu", progress=False)
    assert result.count == 12 and result.amp and result.channels_last
    assert result.top1 == pytest.approx(100 * 3 / 12)  # class 2 (zebras, 3 images) is always first


def _append_rows(path: str, worker: int, n: int) -> None:
    for i in range(n):
        append_results(path, {"worker": worker, "row": i})


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_concurrent_appends_lose_no_row(tmp_path, suffix) -> None:
    """4 processes x 100 appends to one results file: 400 rows, each once (a lock file serialises them)."""
    import multiprocessing

    path = str(tmp_path / f"results{suffix}")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_rows, args=(path, w, 100)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    if suffix == ".csv":
        with open(path, newline="") as f:
            rows = [(int(r["worker"]), int(r["row"])) for r in csv.DictReader(f)]
    else:
        rows = [(r["worker"], r["row"]) for r in json.loads(Path(path).read_text())]
    assert len(rows) == 400 and set(rows) == {(w, i) for w in range(4) for i in range(100)}


def test_results_file_problems_are_found_before_the_evaluation(tiny, tmp_path, capsys) -> None:
    args = ["validate", str(tiny["data"]), "--model", str(tiny["arch"]), "--weights", str(tiny["known"]),
            "--workers", "0", "--device", "cpu"]
    assert cli.main([*args, "--results-file", str(tmp_path)]) == 2  # a folder
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"gpunet: error: --results-file {tmp_path}: is a folder")
    with pytest.raises(SettingError, match="is a folder"):
        append_results(tmp_path, {"model": "a"})
