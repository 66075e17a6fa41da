"""amig_plugin itself must not call deprecated torch/transformers APIs: attribution (AMIG and
KN, the causal path with its reused key/value cache and the masked path) on tiny models of
every supported family, with every warning recorded, gives no FutureWarning /
DeprecationWarning. (transformers >= 5.2x renamed ``past_key_values`` to ``cache``; the old
keyword warns that it goes away in 5.40.)"""

from __future__ import annotations

import warnings

import pytest

from amig_plugin.attribution import neuron_attributions
from amig_plugin.testing import FAMILIES, prompt_for

DEPRECATIONS = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)


@pytest.mark.parametrize("kind", FAMILIES)
def test_attribution_triggers_no_deprecation_warning(models, kind):
    model, tok = models(kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for method in ("amig", "kn"):
            r = neuron_attributions(model, tok, prompt_for(kind), "paris", method=method, steps=4)
            assert r.attributions.shape[0] == model.config.num_hidden_layers
    found = [f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}" for w in caught
             if issubclass(w.category, DEPRECATIONS)]
    assert not found, "\n".join(found)
