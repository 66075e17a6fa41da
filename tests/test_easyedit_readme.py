"""The README's EasyEdit snippet, as written, on a CPU-only run: with the PyPI easyeditor of
the environment and with EasyEdit's GitHub main snapshot first on the import path. Only the
model is swapped (the hub is not reachable in tests): the shipped ``hparams/AMIG/gpt2.yaml``
with ``model_name`` pointing at a tiny local GPT-2, ``device: 0`` kept."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MAIN_SNAPSHOT = Path(os.environ.get("EASYEDIT_MAIN") or REPO / ".." / "shared" / "vendor" / "easyedit-main").resolve()
HAS_PYPI = importlib.util.find_spec("easyeditor") is not None
HAS_MAIN = (MAIN_SNAPSHOT / "easyeditor" / "__init__.py").is_file()


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## EasyEdit\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    from test_easyedit_amig import train_tiny_gpt2

    root = tmp_path_factory.mktemp("readme")
    train_tiny_gpt2(str(root / "tiny-gpt2"), steps=60)
    config = yaml.safe_load((REPO / "hparams" / "AMIG" / "gpt2.yaml").read_text())
    assert config["device"] == 0
    config.update(model_name=str(root / "tiny-gpt2"), steps=4)
    path = root / "gpt2.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("flavour", [
    pytest.param("pypi", marks=pytest.mark.skipif(not HAS_PYPI, reason="easyeditor (PyPI) is not installed")),
    pytest.param("main", marks=pytest.mark.skipif(not HAS_MAIN, reason=f"no EasyEdit main snapshot in {MAIN_SNAPSHOT}")),
])
def test_readme_snippet_runs_on_cpu(tiny_yaml, tmp_path, flavour):
    code = readme_snippet()
    assert '"hparams/AMIG/gpt2.yaml"' in code
    code = code.replace('"hparams/AMIG/gpt2.yaml"', repr(str(tiny_yaml)))
    code = "import torch\ntorch.cuda.is_available = lambda: False  # as on a CPU-only machine\n" + code
    env = dict(os.environ, OMP_NUM_THREADS="1")
    path = [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(([str(MAIN_SNAPSHOT)] if flavour == "main" else []) + path)
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "amig_plugin: AMIG hparams ask for device 0, but CUDA is not available here: running on the CPU" in out.stderr
    summary = eval(out.stdout.strip().splitlines()[-1], {"nan": float("nan")})  # the printed dict
    assert summary["requests"] == 1 and "rewrite_acc" in summary["post"]
