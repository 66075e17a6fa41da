"""Interventions on knowledge neurons and the localization effect.

Modules: :mod:`.activations` (scale chosen FFN neurons at one position inside a ``with``
block: suppress ×0, enhance ×2; batched scoring under many interventions; weights never
touched), :mod:`.effect` (the relative change of P(gold) on related and unrelated prompts,
random controls, the per-method summary), :mod:`.value_vectors` (weight-level edits of value
vectors with a bit-for-bit backup), :mod:`.neuron_edit` (the optimized value-vector edit, our
extension; import it from there).
"""

from .activations import (MODE_FACTORS, REQUIRED, enhance_neurons, scale_neurons, scores_under_interventions,
                          suppress_neurons, target_position)
from .effect import (EffectCase, EffectReport, effect_row, fact_effect, localization_effect, random_control_set,
                     random_neuron_set, relative_change, uniform_neurons, unrelated_sample)
from .value_vectors import WeightBackup, edit_value_vectors, edited_value_vectors, target_embedding

__all__ = ["MODE_FACTORS", "REQUIRED", "scale_neurons", "suppress_neurons", "enhance_neurons", "target_position",
           "scores_under_interventions", "EffectCase", "EffectReport", "fact_effect", "effect_row",
           "localization_effect", "random_neuron_set", "random_control_set", "uniform_neurons", "relative_change", "unrelated_sample",
           "WeightBackup", "edit_value_vectors", "edited_value_vectors", "target_embedding"]
