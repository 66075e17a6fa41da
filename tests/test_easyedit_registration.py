"""The one registration table (``amig_plugin.easyedit.methods.METHODS``) against EasyEdit's
live ``ALG_DICT``: ``register()`` adds every row and nothing else of ours, ``unregister()``
removes every row; each row's hparams class accepts its own ``alg_name``; the methods
package imports neither the registration nor the editor (nor torch)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from amig_plugin.easyedit.methods import METHODS, method_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_easyeditor = pytest.mark.skipif(importlib.util.find_spec("easyeditor") is None,
                                      reason="easyeditor is not installed (pip install --no-deps easyeditor==0.0.1.dev0)")


def _ours(table: dict) -> dict:
    """The entries of ``table`` whose function is amig_plugin's."""
    return {name: fn for name, fn in table.items() if str(getattr(fn, "__module__", "")).startswith("amig_plugin.")}


def test_rows_are_unique_and_resolve():
    names = [spec.name for spec in METHODS]
    assert names == ["AMIG", "LIKN"] and len(set(names)) == len(names)
    for spec in METHODS:
        assert method_spec(spec.name) is spec
        hp = spec.hparams_class().from_dict({"alg_name": spec.name, "model_name": "gpt2"})
        assert hp.alg_name == spec.name
        assert callable(spec.apply_function())
    with pytest.raises(KeyError, match="AMIG"):
        method_spec("ROME")


@needs_easyeditor
def test_register_adds_every_row_and_unregister_removes_every_row():
    from amig_plugin.easyedit import compat, factcheck_metric
    from amig_plugin.easyedit.registration import ALGORITHMS, is_registered, register, unregister

    was_registered = is_registered()
    try:
        result = register()
        table = compat.alg_dict()
        assert _ours(table) == {spec.name: spec.apply_function() for spec in METHODS}
        assert set(result["algorithms"]) == set(ALGORITHMS) == {spec.name for spec in METHODS}
        assert factcheck_metric.is_registered()
        base_init = importlib.import_module("easyeditor.editors.editor").BaseEditor.__dict__["__init__"]
        assert hasattr(base_init, "_amig_model_name_guard")

        assert unregister() is True
        assert _ours(table) == {} and not any(spec.name in table for spec in METHODS)
        assert not factcheck_metric.is_registered()
        base_init = importlib.import_module("easyeditor.editors.editor").BaseEditor.__dict__["__init__"]
        assert not hasattr(base_init, "_amig_model_name_guard")
        assert unregister() is False  # nothing left to take away
    finally:
        if was_registered:
            register()


def test_methods_import_neither_registration_nor_editor(tmp_path):
    code = """
        import json, sys
        import amig_plugin.easyedit.methods.likn, amig_plugin.easyedit.methods.amig
        from amig_plugin.easyedit.methods import METHODS
        [spec.hparams_class() for spec in METHODS]
        print(json.dumps(sorted(m for m in ("torch", "easyeditor", "amig_plugin.easyedit.registration",
                                            "amig_plugin.easyedit.editor", "amig_plugin.easyedit.compat")
                                if m in sys.modules)))
    """
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
