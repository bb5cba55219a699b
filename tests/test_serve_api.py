"""`gpunet.serve`'s Python API inside a user's own Ray Serve application (slow: starts Ray in this process).

`build_app` under a route prefix of the user's choosing (the demo page's links follow it), the
model deployment bound into the user's own deployment and called through its handle, and
`app_builder` as `serve run MODULE:app_builder key=value` calls it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from _helpers import odd_mode_images, save_tiny_classifier

import gpunet

pytestmark = pytest.mark.slow
serve = pytest.importorskip("ray.serve")
requests = pytest.importorskip("requests")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve_api")
    return {"model": save_tiny_classifier(d, seed=5), **odd_mode_images(d / "images")}


@pytest.fixture(scope="module")
def ray_serve() -> Any:
    import ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_build_app_and_the_model_deployment_in_a_user_application(ray_serve, files) -> None:
    from gpunet.serve import ServeConfig, build_app, deployment

    cfg = ServeConfig(str(files["model"]), device="cpu", max_batch_size=4, cpus_per_replica=0.5)  # Ray has 2 CPUs
    serve.run(build_app(cfg), name="gpunet", route_prefix="/gpunet")
    jpeg = files["RGB"].read_bytes()
    r = requests.post(ray_serve + "/gpunet/v1/classify", data=jpeg, headers={"Content-Type": "image/jpeg"},
                      params={"top_k": 3}, timeout=60)
    assert r.status_code == 200, r.text
    expected = gpunet.Classifier(str(files["model"]), device="cpu").predict(files["RGB"], top_k=3)[0]
    assert [t["index"] for t in r.json()["results"][0]["topk"]] == [t.index for t in expected.topk]
    assert '<base href="/gpunet/">' in requests.get(ray_serve + "/gpunet/", timeout=30).text

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Catalog:
        def __init__(self, model: Any) -> None:
            self.model = model

        async def __call__(self, request: Any) -> dict[str, Any]:
            top = await self.model.classify_images.remote([await request.body()], 3)
            return {"labels": [t["label"] for t in top[0]]}

    serve.run(Catalog.bind(deployment(cfg).bind(cfg)), name="catalog", route_prefix="/catalog")
    r = requests.post(ray_serve + "/catalog", data=jpeg, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"labels": [t.label for t in expected.topk]}
    serve.delete("catalog")
    serve.delete("gpunet")


def test_app_builder_takes_serve_run_arguments(ray_serve, files) -> None:
    from gpunet.serve.app import app_builder

    app = app_builder({"model": str(files["model"]), "device": "cpu", "max_batch_size": "2", "top_k": "2",
                       "cpus_per_replica": "0.5"})
    serve.run(app, name="built", route_prefix="/built")
    info = requests.get(ray_serve + "/built/v1/model", timeout=30).json()
    assert info["limits"]["max_batch_size"] == 2 and info["limits"]["top_k"] == 2
    r = requests.post(ray_serve + "/built/v1/classify", data=files["L"].read_bytes(),
                      headers={"Content-Type": "image/png"}, timeout=60)
    assert r.status_code == 200 and len(r.json()["results"][0]["topk"]) == 2
    serve.delete("built")
