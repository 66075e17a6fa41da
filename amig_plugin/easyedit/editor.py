"""``AMIGEditor``: EasyEdit's ``BaseEditor`` for any model our loader can load, including
masked LMs and the embedded Gemma-3-270M.

EasyEdit picks the model class from substrings of ``model_name`` (t5/gpt/llama/...; BERT
and Gemma raise ``NotImplementedError``), and accepts an already loaded
``(model, tokenizer)`` pair as ``model_name`` -- but its evaluation then calls
``model_name.lower()`` on that tuple. ``AMIGEditor`` (a ``BaseEditor`` subclass):

* loads the model with :func:`amig_plugin.loading.load_model` (hub names, local folders,
  ``gemma-3-270m``; BERT-like configs as masked LMs), or takes ``model=``/``tokenizer=``;
  builds the editor through EasyEdit's ``(model, tokenizer)`` path and then gives
  ``self.model_name`` back its string, so EasyEdit's evaluation works;
* sets the tokenizer's padding side as EasyEdit does for causal LMs (right for the ROME
  family, left otherwise);
* runs construction and every ``edit``/``edit_requests``/``batch_edit``/``edit_dataset``
  inside :func:`~amig_plugin.easyedit.compat.easyedit_runtime` (CPU without CUDA, no
  ``./logs`` files), and, *for the duration of the call only*, swaps in
  :func:`~amig_plugin.easyedit.masked_lm.compute_masked_lm_edit_quality` for EasyEdit's
  causal-only ``compute_edit_quality`` when the model is a masked LM, and maps the
  architecture to EasyEdit-KN's adapter (``gpt2``/``bert``/``llama``) when running
  EasyEdit's own ``KN`` on a model whose name it does not know (e.g. Gemma: gated MLP
  like Llama), and, for causal LMs, scores each request's prompts in one batched forward
  with EasyEdit's own tokenization and metrics, and (``cjk_no_space=True``, default) scores
  prompts that end in a CJK character as ``prompt + target`` instead of EasyEdit's
  ``prompt + " " + target`` (:mod:`amig_plugin.easyedit.teacher_forcing`), and, for MEMIT,
  presents transformers-5 decoder-block outputs to its ``compute_z`` as the tuples it expects
  (:mod:`amig_plugin.easyedit.shims`).

Nothing is patched outside those calls. ``AMIG`` is registered on construction.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from typing import Any, Iterator, Optional

from .compat import easyedit_flavour, easyedit_runtime, import_easyeditor

__all__ = ["editor_class", "load_editor", "load_likn_editor", "independent_edit_kwargs", "ROME_FAMILY"]

#: EasyEdit sets right padding for these methods and left padding for the others.
ROME_FAMILY = ("ROME", "MEMIT", "EMMET", "EAMET", "R-ROME", "AlphaEdit", "CORE", "SPHERE")

_CLASS = None


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    missing = object()
    old = getattr(module, name, missing)
    setattr(module, name, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(module, name)
        else:
            setattr(module, name, old)


def _kn_model_type(model) -> Optional[str]:
    from ..models import GatedMLPFamily, GPT2Family, MaskedLMFamily, UnsupportedModelError, get_family

    try:
        family = get_family(model)
    except UnsupportedModelError:
        return None
    if isinstance(family, GPT2Family):
        return "gpt2"
    if isinstance(family, MaskedLMFamily):
        return "bert"
    if isinstance(family, GatedMLPFamily):
        return "llama"
    return None


def _fill_times(result: Any, times: list) -> None:
    """Set ``metrics[i]["time"]`` (seconds in the apply function) where EasyEdit left it
    out, when there is one timed call per request."""
    metrics = result[0] if isinstance(result, tuple) and result else None
    if not isinstance(metrics, list) or len(metrics) != len(times):
        return
    for entry, seconds in zip(metrics, times):
        if isinstance(entry, dict) and entry.get("time") is None:
            entry["time"] = seconds


def independent_edit_kwargs() -> dict:
    """Keyword arguments of ``edit()`` that make every EasyEdit method reset the model
    after each request: PyPI ``keep_original_weight=True`` (its ROME/MEMIT/FT return the
    originals only then), GitHub main ``sequential_edit=False``."""
    import_easyeditor()
    if easyedit_flavour() == "github-main":
        return {"sequential_edit": False}
    return {"keep_original_weight": True}


def editor_class():
    """The ``AMIGEditor`` class (built on first use: it subclasses easyeditor's BaseEditor)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import_easyeditor()
    editor_mod = importlib.import_module("easyeditor.editors.editor")
    BaseEditor = editor_mod.BaseEditor

    class AMIGEditor(BaseEditor):
        """``BaseEditor`` that loads models with amig_plugin's loader and evaluates masked
        LMs with cloze metrics (see :mod:`amig_plugin.easyedit.editor`)."""

        #: its calls run in easyedit_runtime (cuda_to_cpu) already
        handles_devices = True

        @classmethod
        def from_hparams(cls, hparams, model=None, tokenizer=None, log_dir: Optional[str] = None,
                         cjk_no_space: bool = True):
            return cls(hparams, model=model, tokenizer=tokenizer, log_dir=log_dir, cjk_no_space=cjk_no_space)

        def __init__(self, hparams, model=None, tokenizer=None, log_dir: Optional[str] = None,
                     cjk_no_space: bool = True):
            from ..loading import load_model
            from ..models import UnsupportedModelError, get_family
            from .registration import register

            register()
            self._log_dir = log_dir
            self._cjk_no_space = cjk_no_space
            self._depth = 0
            name = hparams.model_name
            if model is None and not isinstance(name, str):
                model, tokenizer = name
            if model is None:
                import torch

                dtype = "float16" if getattr(hparams, "fp16", False) else None
                device = "cpu"  # EasyEdit then moves the model to its device
                dev = getattr(hparams, "device", None)
                if torch.cuda.is_available() and not getattr(hparams, "model_parallel", False) and dev is not None:
                    device = f"cuda:{dev}" if isinstance(dev, int) or str(dev).isdigit() else str(dev)
                model, tokenizer = load_model(name, device=device, dtype=dtype)
            if tokenizer is None:
                raise ValueError("AMIGEditor: pass tokenizer= together with model=")
            if not isinstance(name, str):
                name = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
            try:
                self.kind = get_family(model).kind
            except UnsupportedModelError:
                self.kind = None
            hparams.model_name = (model, tokenizer)
            try:
                with easyedit_runtime(log_dir):
                    super().__init__(hparams)
            finally:
                hparams.model_name = name
            self.model_name = name
            if self.kind == "causal" and getattr(tokenizer, "padding_side", None) is not None:
                tokenizer.padding_side = "right" if hparams.alg_name in ROME_FAMILY else "left"

        @contextlib.contextmanager
        def runtime(self) -> Iterator[None]:
            """The context every edit call runs in (re-entrant)."""
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with contextlib.ExitStack() as stack:
                stack.enter_context(easyedit_runtime(self._log_dir))
                if self.kind == "masked":
                    from .masked_lm import compute_masked_lm_edit_quality

                    stack.enter_context(_patched(editor_mod, "compute_edit_quality", compute_masked_lm_edit_quality))
                elif self.kind == "causal":
                    from .teacher_forcing import prediction_acc, prefetching_edit_quality

                    # one batched forward per request; PyPI 0.0.1.dev0 also binds test_prediction_acc
                    # in portability_evaluate (GitHub main deleted it)
                    stack.enter_context(_patched(editor_mod, "compute_edit_quality", prefetching_edit_quality(
                        editor_mod.compute_edit_quality, cjk_no_space=self._cjk_no_space)))
                    for mod_name in ("easyeditor.evaluate.evaluate", "easyeditor.evaluate.portability_evaluate"):
                        try:
                            mod = importlib.import_module(mod_name)
                        except ImportError:
                            continue
                        if hasattr(mod, "test_prediction_acc"):
                            stack.enter_context(_patched(mod, "test_prediction_acc", prediction_acc(
                                mod.test_prediction_acc, cjk_no_space=self._cjk_no_space)))
                if self.alg_name == "MEMIT":
                    from .shims import check_memit_adaptation, memit_post_norm_targets, memit_tuple_block_outputs

                    stack.enter_context(memit_tuple_block_outputs())
                    if check_memit_adaptation(self.hparams):
                        stack.enter_context(memit_post_norm_targets(self.model, self.hparams))
                if self.alg_name == "KN":
                    kn_type = _kn_model_type(self.model)
                    kn_main = importlib.import_module("easyeditor.models.kn.kn_main")
                    original = kn_main.model_type

                    def model_type(model_name, _orig=original, _mapped=kn_type):
                        try:
                            return _orig(model_name)
                        except ValueError:
                            if _mapped is None:
                                raise
                            return _mapped

                    stack.enter_context(_patched(kn_main, "model_type", model_type))
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1

        def _call(self, method, *args, **kwargs):
            """``method`` in :meth:`runtime`; the outermost call times every apply-function
            call and gives requests without EasyEdit's ``time`` (GitHub main) those times."""
            if self._depth:
                with self.runtime():
                    return method(*args, **kwargs)
            times: list = []
            apply_algo = self.apply_algo

            def timed(*a, **k):
                start = time.perf_counter()
                try:
                    return apply_algo(*a, **k)
                finally:
                    times.append(time.perf_counter() - start)

            self.apply_algo = timed
            try:
                with self.runtime():
                    result = method(*args, **kwargs)
            finally:
                self.apply_algo = apply_algo
            _fill_times(result, times)
            return result

        def edit(self, *args, **kwargs):
            return self._call(super().edit, *args, **kwargs)

        def edit_requests(self, *args, **kwargs):
            return self._call(super().edit_requests, *args, **kwargs)

        def batch_edit(self, *args, **kwargs):
            return self._call(super().batch_edit, *args, **kwargs)

        def edit_dataset(self, *args, **kwargs):
            return self._call(super().edit_dataset, *args, **kwargs)

    AMIGEditor.__module__ = __name__
    AMIGEditor.__qualname__ = "AMIGEditor"
    _CLASS = AMIGEditor
    return _CLASS


def load_editor(hparams, model=None, tokenizer=None, log_dir: Optional[str] = None, cjk_no_space: bool = True):
    """``AMIGEditor.from_hparams(hparams, model=..., tokenizer=...)``; ``hparams`` may be a
    path to an AMIG YAML (other methods: pass their EasyEdit hparams object)."""
    import os

    if isinstance(hparams, (str, os.PathLike)):
        from .methods.amig.hparams import AMIGHyperParams

        hparams = AMIGHyperParams.from_hparams(hparams)
    return editor_class().from_hparams(hparams, model=model, tokenizer=tokenizer, log_dir=log_dir,
                                       cjk_no_space=cjk_no_space)


def load_likn_editor(hparams, model=None, tokenizer=None, log_dir: Optional[str] = None):
    """An :class:`AMIGEditor` running ``LIKN`` (registered first); ``hparams`` may be a path
    to a LIKN YAML."""
    import os

    from .methods.likn.hparams import LIKNHyperParams
    from .registration import register_likn

    if isinstance(hparams, (str, os.PathLike)):
        hparams = LIKNHyperParams.from_hparams(hparams)
    register_likn()
    return load_editor(hparams, model=model, tokenizer=tokenizer, log_dir=log_dir)
