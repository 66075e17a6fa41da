"""One localization service for every study (LIKN, DKN, fact-checking, runs, compare, demo).

Modules: :mod:`.settings` (:class:`LocalizationSettings`: what defines a result, what only
changes speed, the cache key), :mod:`.queries` (the (prompt, target) per causal mode),
:mod:`.cache` (the persistent cache of localizations, keyed by model
weights and settings), :mod:`.service` (:func:`localize_fact` / :func:`localize_facts`, through the shared
:class:`~amig_plugin.localization.cache.LocalizationCache`).
"""

from .cache import (CacheWarning, InvalidRecord, LocalizationCache, cache_root, check_neurons_record, shown_path,
                    model_fingerprint, model_folder_name)
from .queries import check_causal_mode, cloze_query, fact_query
from .service import combine_prompt_localizations, localize_fact, localize_facts, localize_query
from .settings import (DEFAULT_SETTINGS, EXECUTION_FIELDS, OPTIONAL_RESULT_FIELDS, RESULT_FIELDS,
                       LocalizationSettings)

__all__ = ["LocalizationCache", "CacheWarning", "InvalidRecord", "cache_root", "check_neurons_record", "shown_path",
           "model_fingerprint", "model_folder_name", "LocalizationSettings", "DEFAULT_SETTINGS", "RESULT_FIELDS", "EXECUTION_FIELDS", "OPTIONAL_RESULT_FIELDS",
           "fact_query", "cloze_query", "check_causal_mode", "localize_fact", "localize_facts", "localize_query",
           "combine_prompt_localizations"]
