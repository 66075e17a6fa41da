"""Second-moment (covariance) statistics for EasyEdit's ROME and MEMIT, from a local corpus.

ROME (with ``mom2_adjustment: true``) and MEMIT (always) need ``E[k k^T]`` of the inputs
``k`` of the edited FFN output projection, which EasyEdit computes from Wikipedia through
``datasets.load_dataset`` -- unreachable offline. EasyEdit's ``layer_stats`` first looks for
a cached file ::

    <stats_dir>/<model.config._name_or_path with / -> _>/<mom2_dataset>_stats/
        <rewrite_module>_<mom2_dtype>_mom2_<mom2_n_samples>.npz

and only downloads when it is missing. :func:`ensure_mom2_stats` writes exactly that file
(EasyEdit's own ``CombinedStat(mom2=SecondMoment())`` state, saved with
``save_cached_state``) from a local text corpus, so EasyEdit loads it unchanged.

Corpora (:func:`local_corpus`):

* ``facts``: every prompt of the shipped facts (English and Chinese) with its gold object;
* ``pydoc``: English prose from the Python standard library's ``pydoc_data.topics``
  (the help texts), split into sentences;
* ``stdlib``: English prose from the docstrings of the Python standard library's source files
  (parsed with :mod:`ast`, never imported);
* ``facts+pydoc`` (default): both, interleaved; ``facts+pydoc+stdlib``: the largest, the
  three (the facts interleaved with pydoc, then the docstrings);
* a path: a UTF-8 text file, one text per line.

The corpus is cut to ``max_tokens`` tokens; the statistics are a ``mom2_dtype`` matrix over
every non-padding token position. Computing stops at the deepest layer needed (no LM head).
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["local_corpus", "stats_path", "ensure_mom2_stats", "CORPORA"]

CORPORA = ("facts", "pydoc", "stdlib", "facts+pydoc", "facts+pydoc+stdlib")


def _fact_sentences() -> List[str]:
    from ..data import MASK_PLACEHOLDER, shipped_facts

    out = []
    for fact in shipped_facts():
        for lang in fact.languages:
            for prompt in fact.prompts[lang]:
                out.append(prompt.replace(MASK_PLACEHOLDER, fact.object[lang]))
    return out


def _pydoc_sentences() -> List[str]:
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except ImportError:  # pragma: no cover - stripped Python builds
        return []
    return [sentence for key in sorted(topics) for sentence in _prose(topics[key])]


def _stdlib_sentences() -> List[str]:
    """Sentences of the docstrings in the Python standard library's source files, read with
    :mod:`ast` (nothing is imported or run), in sorted file order."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    out: List[str] = []
    for path in sorted(root.rglob("*.py")):
        if any(part in ("test", "tests", "idle_test", "site-packages") for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    out.extend(_prose(doc))
    return out


def _prose(text: str) -> List[str]:
    text = re.sub(r"\s+", " ", text)
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)
            if 40 <= len(s.strip()) <= 400 and sum(c.isalpha() for c in s) > 0.6 * len(s.strip())]


def local_corpus(source: str = "facts+pydoc") -> List[str]:
    """Texts of a local corpus (see the module docstring)."""
    if source == "facts":
        return _fact_sentences()
    if source == "pydoc":
        return _pydoc_sentences()
    if source == "stdlib":
        return _stdlib_sentences()
    if source in ("facts+pydoc", "facts+pydoc+stdlib"):
        facts, prose = _fact_sentences(), _pydoc_sentences()
        if source.endswith("+stdlib"):
            prose += _stdlib_sentences()
        out: List[str] = []
        for i in range(max(len(facts), len(prose))):
            if i < len(facts):
                out.append(facts[i])
            if i < len(prose):
                out.append(prose[i])
        return out
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValueError(f"unknown corpus {source!r}: use one of {CORPORA} or the path of a text file (one text per line)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def stats_path(model, layer_name: str, stats_dir: str, ds_name: str, precision: str, sample_size: Optional[int]) -> Path:
    """Where the installed EasyEdit's ``layer_stats`` looks for cached ``mom2`` stats: under
    ``_name_or_path`` with ``/`` -> ``_`` (PyPI 0.0.1.dev0) or its last path part (GitHub
    main)."""
    from .compat import FLAVOUR_MAIN, easyedit_flavour

    name = str(model.config._name_or_path)
    model_name = name.rsplit("/")[-1] if easyedit_flavour() == FLAVOUR_MAIN else name.replace("/", "_")
    suffix = "" if sample_size is None else f"_{sample_size}"
    return Path(stats_dir) / model_name / f"{ds_name}_stats" / f"{layer_name}_{precision}_mom2{suffix}.npz"


class _Stop(Exception):
    pass


def ensure_mom2_stats(
    model,
    tok,
    layer_names: Sequence[str],
    *,
    stats_dir: str,
    ds_name: str,
    sample_size: int,
    precision: str = "float32",
    texts: Iterable[str],
    max_tokens: int = 20000,
    max_length: int = 64,
    batch_size: int = 16,
    progress: bool = True,
) -> List[Path]:
    """Write EasyEdit-format ``mom2`` statistics of the *inputs* of ``layer_names``
    (e.g. ``model.layers.5.mlp.down_proj``) unless cached. Returns the file paths."""
    from .compat import import_easyeditor

    import_easyeditor()
    rs = importlib.import_module("easyeditor.util.runningstats")
    paths = {name: stats_path(model, name, stats_dir, ds_name, precision, sample_size) for name in layer_names}
    todo = [name for name, p in paths.items() if not p.exists()]
    if not todo:
        return list(paths.values())
    modules = dict(model.named_modules())
    missing = [n for n in todo if n not in modules]
    if missing:
        raise ValueError(f"modules {missing} not found in {type(model).__name__}; check rewrite_module_tmp in the hparams")
    order = [n for n, _ in model.named_modules() if n in todo]
    last = order[-1]
    sums = {n: None for n in todo}
    counts = {n: 0 for n in todo}
    current_mask: dict = {}

    def hook_for(name):
        def hook(module, args):
            x = args[0].detach().to(torch.float64)
            mask = current_mask["m"].to(x.device).bool()
            feats = x[mask]  # [tokens, width]
            sums[name] = feats.T @ feats if sums[name] is None else sums[name] + feats.T @ feats
            counts[name] += feats.shape[0]
            if name == last:
                raise _Stop
        return hook

    texts = list(texts)
    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in todo]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    padding_side = getattr(tok, "padding_side", "right")
    tok.padding_side = "right"
    used = 0
    try:
        bar = tqdm(total=max_tokens, desc=f"mom2 stats ({ds_name}, {len(todo)} layer(s))", unit="tok", disable=not progress)
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                if used >= max_tokens:
                    break
                enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length)
                current_mask["m"] = enc["attention_mask"]
                try:
                    model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device))
                except _Stop:
                    pass
                n = int(enc["attention_mask"].sum())
                used += n
                bar.update(n)
        bar.close()
    finally:
        for h in handles:
            h.remove()
        tok.padding_side = padding_side
        model.train(was_training)
    dtype = getattr(torch, precision)
    for name in todo:
        stat = rs.CombinedStat(mom2=rs.SecondMoment())
        stat.mom2.count = counts[name]
        stat.mom2.mom2 = sums[name].to(dtype).cpu()
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        tmp = paths[name].with_name(paths[name].stem + ".tmp.npz")
        rs.save_cached_state(str(tmp), stat, {"sample_size": sample_size})
        os.replace(tmp, paths[name])
    return list(paths.values())
