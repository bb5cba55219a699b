"""`gpunet serve` without a server: settings, request parsing and refusals, the model side, the CLI's early errors.

The real server (Ray Serve on a loopback port) is tested end to end in test_serve_e2e.py.
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _helpers import odd_mode_images, save_tiny_classifier
from PIL import Image

import gpunet
from gpunet.errors import SettingError
from gpunet.serve import ServeConfig, ServerOptions
from gpunet.serve.inputs import (
    RequestError,
    Upload,
    check_headers,
    decode_image,
    form_uploads,
    read_body,
)

urllib3 = pytest.importorskip("urllib3")  # comes with Ray (through requests)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny architecture with fixed random weights, its probabilities spread so inputs matter."""
    return save_tiny_classifier(tmp_path_factory.mktemp("serve_model"), seed=3)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    return odd_mode_images(tmp_path_factory.mktemp("serve_images"))


def _refused(coro_or_call, status: int, *words: str) -> str:
    with pytest.raises(RequestError) as info:
        result = coro_or_call()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert info.value.status == status, str(info.value)
    message = str(info.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message
    return message


# ---------------------------------------------------------------------------- settings

@pytest.mark.parametrize("kwargs, words", [
    ({"max_batch_size": 0}, ["max_batch_size", "positive"]),
    ({"top_k": 2.5}, ["top_k", "whole number"]),
    ({"batch_wait_ms": -1}, ["batch_wait_ms", "non-negative"]),
    ({"runtime": "tensorflow"}, ["runtime", "torch, onnxruntime, openvino"]),
    ({"max_batch_size": 32, "max_ongoing_requests": 8}, ["max_ongoing_requests (8)", "max_batch_size (32)"]),
    ({"replicas": True}, ["replicas"]),
])
def test_config_refuses_bad_settings(kwargs, words) -> None:
    with pytest.raises(SettingError) as info:
        ServeConfig("gpunet_0", **kwargs)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"port": 0}, ["port", "1-65535"]),
    ({"metrics_port": 70000}, ["metrics_port"]),
    ({"route_prefix": "api"}, ["route_prefix", "'/'"]),
    ({"object_store_mb": 10}, ["object_store_mb", "80 MB"]),
])
def test_server_options_refuse_bad_settings(kwargs, words) -> None:
    with pytest.raises(SettingError) as info:
        ServerOptions(**kwargs)
    for w in words:
        assert w in str(info.value)


def test_server_options_url() -> None:
    assert ServerOptions().url == "http://127.0.0.1:8000/"
    assert ServerOptions(host="::1", port=9000, route_prefix="/gpunet").url == "http://[::1]:9000/gpunet/"


def test_config_from_serve_run_arguments() -> None:
    """`serve run gpunet.serve.app:app_builder key=value ...` passes strings; they become the typed settings."""
    cfg = ServeConfig.from_args({"model": "m.onnx", "pretrained": "false", "max_batch_size": "16",
                                 "batch_wait_ms": "2.5", "gpus_per_replica": "0.5", "labels": "cat,dog"})
    assert (cfg.model, cfg.pretrained, cfg.max_batch_size, cfg.batch_wait_ms) == ("m.onnx", False, 16, 2.5)
    assert cfg.gpus_per_replica == 0.5 and cfg.labels == ("cat", "dog")
    assert ServeConfig.from_args({"model": "x", "random_weights": True, "top_k": 3}).top_k == 3  # YAML: typed
    for bad, words in [({"model": "x", "max_batch_sise": "4"}, ["max_batch_sise", "max_batch_size"]),
                       ({"model": "x", "amp": "maybe"}, ["amp", "true or false"]),
                       ({"model": "x", "top_k": "five"}, ["top_k", "number"])]:
        with pytest.raises(SettingError) as info:
            ServeConfig.from_args(bad)
        assert all(w in str(info.value) for w in words), str(info.value)


# ---------------------------------------------------------------------------- requests

@pytest.mark.parametrize("headers, status, words", [
    ({"content-type": "text/plain"}, 415, ["'text/plain'", "image/*", "multipart/form-data"]),
    ({"content-type": "application/json"}, 415, ["'application/json'"]),
    ({}, 415, ["no Content-Type"]),
    ({"content-type": "image/jpeg", "content-length": "5000"}, 413, ["5000 bytes", "limit of 1000", "--max-bytes"]),
    ({"content-type": "image/jpeg", "content-length": "many"}, 400, ["Content-Length 'many'"]),
])
def test_headers_refused(headers, status, words) -> None:
    _refused(lambda: check_headers(headers, 1000), status, *words)


@pytest.mark.parametrize("kind", ["image/png", "IMAGE/JPEG; charset=x", "application/octet-stream",
                                  "multipart/form-data; boundary=x"])
def test_headers_accepted(kind) -> None:
    check_headers({"content-type": kind, "content-length": "1000"}, 1000)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


def test_body_is_read_up_to_the_limit() -> None:
    assert asyncio.run(read_body(_chunks(b"ab", b"cd"), 4)) == b"abcd"
    _refused(lambda: read_body(_chunks(b"ab", b"cd", b"e"), 4), 413, "more than 4 bytes")
    _refused(lambda: read_body(_chunks(b"", b""), 4), 400, "empty body")


def _multipart(fields: dict[str, object]) -> tuple[dict[str, str], bytes]:
    body, content_type = urllib3.encode_multipart_formdata(fields)
    return {"type": "http", "headers": [(b"content-type", content_type.encode())]}, body


def test_multipart_file_parts(images) -> None:
    a, b = images["RGB"].read_bytes(), images["L"].read_bytes()
    scope, body = _multipart({"image": ("a.jpg", a, "image/jpeg"), "other": ("b.png", b, "image/png")})
    uploads = asyncio.run(form_uploads(scope, body, 4))
    assert uploads == [Upload("a.jpg", a), Upload("b.png", b)]


def test_multipart_refusals(images) -> None:
    data = images["RGB"].read_bytes()
    scope, body = _multipart({f"f{i}": (f"{i}.jpg", data, "image/jpeg") for i in range(3)})
    _refused(lambda: form_uploads(scope, body, 2), 400, "bad multipart/form-data body", "Too many files")
    scope, body = _multipart({"image": "not a file"})
    _refused(lambda: form_uploads(scope, body, 2), 400, "form field 'image' is not a file", "curl -F")
    scope = {"type": "http", "headers": [(b"content-type", b"multipart/form-data")]}
    _refused(lambda: form_uploads(scope, b"--x\r\n", 2), 400, "bad multipart/form-data body")


def test_decoding_refuses_bad_images(images) -> None:
    _refused(lambda: decode_image(Upload("n.png", images["not_image"].read_bytes()), 10**6), 400, "n.png",
             "not an image")
    _refused(lambda: decode_image(Upload("t.jpg", images["corrupt"].read_bytes()), 10**6), 400, "t.jpg",
             "truncated")
    _refused(lambda: decode_image(Upload("e.jpg", b""), 10**6), 400, "e.jpg: empty file")


def test_decompression_bomb_refused_from_the_header() -> None:
    """A 20000 x 20000 PNG of a few kilobytes: refused by its header, before 400 million pixels are decoded."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 100_000
    _refused(lambda: decode_image(Upload("bomb.png", buf.getvalue()), 89_478_485), 413, "bomb.png",
             "400000000 pixels", "decompression bomb")
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, "PNG")  # over our limit, under twice Pillow's (where it only warns)
    with pytest.warns(Image.DecompressionBombWarning):
        _refused(lambda: decode_image(Upload("b.png", buf.getvalue()), 89_478_485), 413,
                 "10000x10000 = 100000000 pixels is over the limit of 89478485", "decompression-bomb guard")
    small = io.BytesIO()
    Image.new("RGB", (40, 30)).save(small, "PNG")
    _refused(lambda: decode_image(Upload("s.png", small.getvalue()), 1000), 413, "40x30 = 1200 pixels", "1000")


def test_decoding_matches_predicts(images) -> None:
    """Every odd mode decodes to the same RGB pixels as `gpunet predict` reads from the file."""
    for key in ("RGB", "L", "LA", "RGBA", "P", "CMYK", "I;16", "I"):
        served = decode_image(Upload(key, images[key].read_bytes()), 10**6)
        expected, error = gpunet.data.load_image(images[key])
        assert error is None and served.mode == "RGB"
        assert served.tobytes() == expected.tobytes(), key


# ---------------------------------------------------------------------------- the model side

def test_engine_equals_classifier(tiny_model, images) -> None:
    from gpunet.serve.engine import Engine

    engine = Engine(ServeConfig(str(tiny_model), device="cpu"))
    keys = ["RGB", "L", "RGBA", "CMYK"]
    served = engine.classify([(engine.prepare(Upload(k, images[k].read_bytes())), 3) for k in keys])
    expected = gpunet.Classifier(str(tiny_model), device="cpu").predict([images[k] for k in keys], top_k=3)
    for got, want in zip(served, expected, strict=True):
        assert [t["index"] for t in got] == [t.index for t in want.topk]
        assert [t["label"] for t in got] == [t.label for t in want.topk]
        assert [t["prob"] for t in got] == pytest.approx([t.prob for t in want.topk], rel=1e-5, abs=1e-7)
    info = engine.info()
    assert (info["runtime"], info["precision"], info["input_size"], info["num_classes"]) == \
        ("torch", "fp32", [3, 32, 32], 1000)
    assert len(info["labels"]) == 1000 and info["limits"]["max_batch_size"] == 8


def test_engine_top_k_per_item(tiny_model, images) -> None:
    from gpunet.serve.engine import Engine

    engine = Engine(ServeConfig(str(tiny_model), device="cpu"))
    t = engine.prepare(Upload("x", images["RGB"].read_bytes()))
    one, five = engine.classify([(t, 1), (t, 5)])
    assert len(one) == 1 and len(five) == 5
    assert one[0]["index"] == five[0]["index"] and one[0]["prob"] == pytest.approx(five[0]["prob"], rel=1e-5)


def test_engine_refuses_torch_runtime_for_an_exported_file(tmp_path) -> None:
    from gpunet.serve.engine import Engine

    with pytest.raises(SettingError, match="runtime torch: .*model.onnx is an exported file"):
        Engine(ServeConfig(str(tmp_path / "model.onnx"), runtime="torch"))


def test_demo_page_has_no_external_assets() -> None:
    pytest.importorskip("ray.serve")
    from gpunet.serve.app import demo_page

    page = demo_page("/gpunet")
    assert '<base href="/gpunet/">' in page and "{{BASE}}" not in page
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert 'id="file"' in page and "v1/classify" in page


def test_deployment_options() -> None:
    pytest.importorskip("ray.serve")
    from gpunet.serve import deployment

    d = deployment(ServeConfig("gpunet_0", replicas=3, cpus_per_replica=2, max_ongoing_requests=32,
                               device="cuda", gpus_per_replica=0.5, drain_timeout_s=4))
    assert (d.name, d.num_replicas, d.max_ongoing_requests) == ("GPUNetModel", 3, 32)
    assert d.ray_actor_options == {"num_cpus": 2, "num_gpus": 0.5}
    assert deployment(ServeConfig("gpunet_0")).ray_actor_options == {"num_cpus": 1.0}


# ---------------------------------------------------------------------------- the command's early errors
# In-process (`gpunet.cli.main`): each fails before Ray starts; test_serve_e2e.py runs the real command.

def _main(capsys, *argv: str) -> tuple[int, str]:
    from gpunet import cli

    code = cli.main(["serve", *argv])
    return code, capsys.readouterr().err


def test_cli_refuses_random_weights_before_starting_ray(capsys) -> None:
    code, err = _main(capsys, "gpunet_0", "--port", "1")
    assert code == 2, err
    assert "gpunet: error: no weights given for gpunet_0" in err and "--random-weights" in err
    assert "Traceback" not in err and "Ray" not in err


@pytest.mark.parametrize("args, words", [
    (["--max-batch-size", "0"], ["max_batch_size: expected a positive number, got 0"]),
    (["--port", "70000"], ["port: expected a TCP port 1-65535, got 70000"]),
    (["--runtime", "openvino"], ["runtime='openvino' applies to exported files"]),
])
def test_cli_bad_settings_are_one_line(capsys, tiny_model, args, words) -> None:
    code, err = _main(capsys, str(tiny_model), *args)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("gpunet: error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), err


def test_cli_port_in_use_is_a_clear_error(capsys, tiny_model) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, err = _main(capsys, str(tiny_model), "--port", str(port))
    assert code == 2, err
    assert f"gpunet: error: --host 127.0.0.1 --port {port}: cannot listen there" in err
    assert err.rstrip().endswith("choose another --port")


@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.1"])  # not an address; TEST-NET-1, not this machine's
def test_cli_host_that_is_not_this_machines_says_to_change_the_host(capsys, tiny_model, host) -> None:
    code, err = _main(capsys, str(tiny_model), "--host", host, "--port", "8000")
    assert code == 2, err
    assert f"gpunet: error: --host {host} --port 8000: cannot listen there" in err
    assert "choose another --host: an address of this machine" in err  # was: "choose another --port"


def test_cli_help_lists_serve(capsys) -> None:
    from gpunet import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--max-batch-size", "--batch-wait-ms", "--replicas", "--max-bytes", "--runtime", "--host"):
        assert option in out
