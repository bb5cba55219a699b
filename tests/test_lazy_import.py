"""`import gpunet` is cheap (no torch, no timm: names load on first use) and still registers the seven models
with timm, whichever is imported first; the command line's help needs no torch either. Fresh processes."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap

import pytest


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_import_gpunet_imports_neither_torch_nor_timm() -> None:
    out = _python("""
        import sys
        import gpunet, gpunet.zoo
        print([m for m in ("torch", "timm", "torchvision", "numpy") if m in sys.modules])
        print(len(gpunet.zoo.list_models()), gpunet.get_pretrained_config("gpunet_d1").params)
        print("torch" in sys.modules)
    """)
    assert out.splitlines() == ["[]", "7 10589859", "False"]


def test_public_names_load_on_first_use() -> None:
    import gpunet.arch
    import gpunet.model
    import gpunet.zoo

    assert gpunet.create_model is gpunet.zoo.create_model and gpunet.GPUNet is gpunet.model.GPUNet
    assert gpunet.Architecture is gpunet.arch.Architecture
    assert all(getattr(gpunet, name) is not None for name in gpunet.__all__)
    assert set(gpunet.__all__) <= set(dir(gpunet))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = gpunet.not_a_name  # type: ignore[attr-defined]


IMPORT_ORDERS = (
    "import gpunet; import timm",
    "import timm; import gpunet",
    "import gpunet; from gpunet.model import GPUNet; import timm",  # timm first imported by gpunet's model module
    "import gpunet; gpunet.create_model('gpunet_1'); import timm",
)


def test_timm_sees_the_models_in_either_import_order() -> None:
    """Each order in a fresh interpreter; the interpreters run side by side (each mostly waits on imports)."""
    code = """
        {imports}
        model = timm.create_model("gpunet_0")
        print(type(model).__name__, len(timm.list_pretrained("gpunet*")), model.default_cfg["tag"])
    """
    with concurrent.futures.ThreadPoolExecutor(len(IMPORT_ORDERS)) as pool:
        outs = list(pool.map(lambda imports: _python(code.format(imports=imports)), IMPORT_ORDERS))
    assert outs == ["GPUNet 7 nv_in1k"] * len(IMPORT_ORDERS)


# `gpunet --help`, `--version` and `list` must not import torch (2 s here; the target is < 1 s for the command).


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_cli_help_and_version_do_not_import_torch(args: list[str]) -> None:
    out = _python(f"""
        import sys
        from gpunet.cli import main
        try:
            main({args!r})
        except SystemExit:
            pass
        print("torch" in sys.modules)
    """)
    assert out.splitlines()[-1] == "False"


def test_cli_list_does_not_import_torch() -> None:
    out = _python("""
        import sys
        from gpunet.cli import main
        main(["list"])
        print("torch" in sys.modules)
    """)
    lines = out.splitlines()
    assert lines[-1] == "False" and any(line.startswith("gpunet_d1") for line in lines)
