"""The edits of one fact and how a value-vector edit is applied.

:func:`plan_edits` gives each fact its edits (:class:`Edit`: LIKN, KN[lang] per language,
Seq-KN, Random); :func:`setting_label` names an edit as measured in a language (Mono-KN,
Own-KN); :func:`parallel_new_object` picks the value protocol's new object, the same in every
language; :func:`apply_value_edit` applies Dai et al.'s value-vector update step by step,
all or nothing, oriented by :func:`activation_signs`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..attribution import frozen_eval, neuron_vectors
from ..data import Fact
from ..intervene import WeightBackup, edit_value_vectors, uniform_neurons
from ..models import get_family
from .sets import FactLIKN, Neuron

__all__ = ["MODES", "Edit", "plan_edits", "setting_label", "setting_kind", "parallel_new_object",
           "activation_signs", "apply_value_edit"]

MODES = ("suppress", "enhance")  # the activation protocol's modes (factors in intervene.MODE_FACTORS)


@dataclass(frozen=True)
class Edit:
    """One edit of one fact: ordered steps ``(language, neurons)``, all of them applied.

    The activation protocol scales the union of the steps' neurons at once; the value
    protocol applies the steps one after the other (step language ``lang`` uses that
    language's old/new objects), nothing undone in between.
    """

    name: str
    steps: tuple[tuple[str, tuple[Neuron, ...]], ...]

    @property
    def neurons(self) -> list[Neuron]:
        return sorted(set().union(*(set(ns) for _, ns in self.steps))) if self.steps else []

    @property
    def source_languages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(l for l, _ in self.steps))


def plan_edits(fact_likn: FactLIKN, *, random_control: bool = True, num_layers: int | None = None,
               ffn_width: int | None = None, seed: int = 0) -> list[Edit]:
    """The edits of one fact: LIKN, KN[lang] for every language, Seq-KN, and (with
    ``random_control``; needs ``num_layers``/``ffn_width``) Random of the LIKN's size."""
    langs = fact_likn.languages
    shared = tuple(fact_likn.shared)
    edits = [Edit("LIKN", tuple((l, shared) for l in langs))]
    edits += [Edit(f"KN[{l}]", ((l, tuple(fact_likn.per_lang[l])),)) for l in langs]
    edits.append(Edit("Seq-KN", tuple((l, tuple(fact_likn.per_lang[l])) for l in langs)))
    if random_control:
        if not (num_layers and ffn_width):
            raise ValueError("random_control needs num_layers and ffn_width")
        rng = random.Random(f"{seed}:random:{fact_likn.fact_id}")
        rand = tuple(uniform_neurons(num_layers, ffn_width, len(shared), rng))
        edits.append(Edit("Random", tuple((l, rand) for l in langs)))
    return edits


def setting_label(edit_name: str, lang: str) -> str:
    """How an edit measured in ``lang`` is reported: ``KN[A]`` is ``Mono-KN (A→lang)`` for
    another language, ``Own-KN (A)`` for its own; other edits keep their name."""
    if edit_name.startswith("KN[") and edit_name.endswith("]"):
        src = edit_name[3:-1]
        return f"Own-KN ({src})" if src == lang else f"Mono-KN ({src}→{lang})"
    return edit_name


def setting_kind(label: str) -> str:
    """The kind of a reported setting: ``Mono-KN (en→zh)`` -> ``Mono-KN``."""
    return label.split(" ")[0]


def parallel_new_object(fact: Fact, langs: Sequence[str], seed: int = 0) -> dict[str, str] | None:
    """A wrong object of the fact's relation, the SAME object in every language, or None.

    Candidate lists are taken as parallel across languages (BMLAMA: same length, same
    order, gold at the same index); a fact whose lists are not parallel, or with no
    candidate that differs from the gold object in every language, gets None.
    """
    cands = [fact.candidates.get(l, ()) for l in langs]
    if not all(cands) or len({len(c) for c in cands}) != 1:
        return None
    gold_idx = {c.index(fact.target(l)) for c, l in zip(cands, langs)}
    if len(gold_idx) != 1:
        return None
    gi = gold_idx.pop()
    options = [k for k in range(len(cands[0]))
               if k != gi and all(c[k] != fact.target(l) and c[k].strip() for c, l in zip(cands, langs))]
    if not options:
        return None
    k = random.Random(f"{seed}:new:{fact.id}").choice(options)
    return {l: c[k] for c, l in zip(cands, langs)}


def activation_signs(model, tokenizer, prompt: str, target: str, neurons: Sequence[Neuron]) -> dict[Neuron, float]:
    """sign(a_i) (+1 for a_i ≥ 0, −1 otherwise) of each neuron at the target position of
    (prompt, target) on the model as it is now."""
    family = get_family(model)
    layers = sorted({l for l, _ in neurons})
    if not layers:
        return {}
    q = family.encode(tokenizer, prompt, target)
    with frozen_eval(family.model):
        vec = neuron_vectors(family, q.input_ids.unsqueeze(0), q.target_position, layers)[0]
    row = {l: r for r, l in enumerate(layers)}
    return {(l, i): (1.0 if float(vec[row[l], i]) >= 0 else -1.0) for l, i in neurons}


def apply_value_edit(model, tokenizer, edit: Edit, old: Mapping[str, str], new: Mapping[str, str], *,
                     lambda_old: float = 1.0, lambda_new: float = 8.0, queries: Mapping[str, tuple[str, str]] | None = None,
                     backup: WeightBackup | None = None) -> WeightBackup:
    """Apply ``edit``'s steps in order with Dai et al.'s value-vector update (step language
    ``l``: ``v_i += s_i·(λ_new·e(new[l]) − λ_old·e(old[l]))``), all on the same weights.

    ``s_i = 1`` (Dai et al.: BERT's GELU neurons are positive where they fire) unless
    ``queries`` maps each step language to the fact's (prompt, target): then ``s_i`` is the
    sign of neuron i's activation at that prompt's target position, read on the model as
    edited by the previous steps. Gated MLPs (Gemma, Llama) have signed neurons
    (``act(gate)·up``): without the sign, a neuron with a negative activation would push
    the output AWAY from the new object. Returns the backup (``restore()`` undoes every
    step bit for bit).

    All or nothing: if any step fails (a missing language in ``old``/``new``/``queries``, a
    target that cannot be embedded, an interrupt), the weights this call changed are
    restored bit for bit before the error propagates, and ``backup`` (when given) is left
    as it was."""
    family = get_family(model)
    mine = WeightBackup(family.model)  # this call's originals only: what a failure restores
    try:
        for lang, neurons in edit.steps:
            if not neurons:
                continue
            if queries is None:
                groups = {1.0: list(neurons)}
            else:
                signs = activation_signs(family, tokenizer, *queries[lang], neurons)
                groups = {s: [n for n in neurons if signs[n] == s] for s in (1.0, -1.0)}
            for sign, group in groups.items():
                if group:
                    edit_value_vectors(family, tokenizer, group, mode="update", old_target=old[lang],
                                       new_target=new[lang], lambda_old=sign * lambda_old,
                                       lambda_new=sign * lambda_new, backup=mine)
    except BaseException:
        mine.restore()
        raise
    if backup is None:
        return mine
    for name, original in mine.originals.items():  # the caller's older originals win
        backup.originals.setdefault(name, original)
    return backup
