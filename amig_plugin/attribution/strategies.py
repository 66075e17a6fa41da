"""Choosing the execution strategy: which row evaluator runs a query (``strategy`` = ``auto``,
``layer_skip``, ``cache`` or ``full``). Every strategy gives the same F and ∂F/∂z to float
rounding; they differ only in how much of the model each row recomputes."""

from __future__ import annotations

from ..models import EncodedQuery, ModelFamily
from .layer_skip import _LayerSkipCausalRunner, _LayerSkipMaskedRunner
from .prefix_cache import _CachedCausalRunner
from .rows import _FullRunner, _RowRunner


def make_runner(family: ModelFamily, query: EncodedQuery, objective: str, strategy: str,
                need_clean: bool = False) -> _RowRunner:
    """The row evaluator for ``strategy``. ``need_clean``: the caller will ask for
    :meth:`_RowRunner.clean_vectors_at` (IG); interventions leave it False and skip that pass
    where it costs one (models whose cache cannot be cut)."""
    if strategy in ("cache", "layer_skip") and family.kind != "causal":
        raise ValueError(f"strategy {strategy!r} reuses a causal LM's prefix cache; {family.name} is a "
                         f"{family.kind} LM: use 'auto' (its own layer skipping) or 'full'")
    if strategy == "full" or (strategy in ("cache", "layer_skip") and query.target_position == 0):
        return _FullRunner(family, query, objective)  # (an empty prefix has nothing to cache)
    if strategy == "cache":  # prefix cache without layer skipping (for comparisons)
        return _CachedCausalRunner(family, query, objective, need_clean)
    if strategy == "layer_skip":
        return _LayerSkipCausalRunner(family, query, objective)
    if strategy != "auto":
        raise ValueError(f"unknown strategy {strategy!r}; use 'auto', 'layer_skip', 'cache' or 'full'")
    if family.kind == "causal" and query.target_position > 0:
        if not need_clean:  # interventions: whole-suffix passes on the prefix cache, no IG rows to skip layers for
            return _CachedCausalRunner(family, query, objective, need_clean=False)
        # IG: layer skipping (it falls back to the plain prefix cache where the cache can't be split)
        return _LayerSkipCausalRunner(family, query, objective)
    if family.kind == "masked" and hasattr(family.model, "bert") and hasattr(family.model, "cls"):
        return _LayerSkipMaskedRunner(family, query, objective)
    return _FullRunner(family, query, objective)
