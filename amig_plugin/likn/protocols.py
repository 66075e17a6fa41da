"""The two editing protocols, measured on every fact, edit and language.

1. :func:`activation_protocol` (the paper's): the edit's neurons are multiplied by 0
   (suppress) or 2 (enhance) at the target position (one batched
   :func:`scores_under_interventions` per query); a multi-step edit applies the union of its
   steps' neurons at once.
2. :func:`value_protocol` (Dai et al.'s value-vector update, :func:`apply_value_edit`): the
   steps applied one after the other on the same weights, restored bit for bit after each edit.

Each record holds per (edit, measured language[, mode]) the relative change of P(gold) on the
fact's prompt ("related") and on other facts' prompts ("unrelated"), and whether the gold
object ranks first among the fact's candidates before and after. With a ``store`` the
measurements are kept under a content key and reused.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from ..data import Fact, causal_prompt_and_target
from ..intervene import MODE_FACTORS, relative_change, scores_under_interventions, unrelated_sample
from ..likelihood import score_pairs
from ..localization import fact_query, model_fingerprint
from ..models import ModelFamily, get_family
from ..store import RecordStore, content_key
from .edits import MODES, Edit, apply_value_edit, parallel_new_object, plan_edits, setting_label
from .report import LIKNReport
from .sets import FactLIKN

__all__ = ["PROTOCOLS", "activation_protocol", "value_protocol"]

PROTOCOLS = ("activation", "value")


def _num_tokens(tokenizer, family, prompt: str, target: str) -> int:
    return family.encode(tokenizer, prompt, target).num_target_tokens


class _Ranker:
    """Candidate objects of (fact, lang) and their query strings / length normalisers."""

    def __init__(self, model, tokenizer, causal_mode: str, rank_by: str):
        if rank_by not in ("mean", "sum"):
            raise ValueError(f"rank_by must be 'mean' (log-prob per token) or 'sum', got {rank_by!r}")
        self.family = get_family(model)
        self.tok = tokenizer
        self.mode = causal_mode
        self.rank_by = rank_by
        self._ntok: dict[tuple[str, str], int] = {}

    def candidates(self, fact: Fact, lang: str) -> list[str]:
        """Gold first, then the other candidates (deduplicated); [gold] if it has none."""
        return list(dict.fromkeys([fact.target(lang), *fact.candidates.get(lang, ())]))

    def query(self, fact: Fact, lang: str, target: str) -> tuple[str, str]:
        return fact_query(fact, lang, target=target, causal_mode=self.mode, kind=self.family.kind)

    def norm(self, prompt: str, target: str) -> int:
        if self.rank_by == "sum":
            return 1
        key = (prompt, target)
        if key not in self._ntok:
            self._ntok[key] = _num_tokens(self.tok, self.family, prompt, target)
        return self._ntok[key]

    def normed(self, fact: Fact, lang: str, cands: Sequence[str], logps: Sequence[float]) -> list[float]:
        """Each candidate's log-prob divided by its length (``rank_by="mean"``) or as is."""
        return [lp / self.norm(*self.query(fact, lang, c)) for c, lp in zip(cands, logps)]

    def first(self, fact: Fact, lang: str, cands: Sequence[str], logps: Sequence[float], idx: int) -> bool:
        """Does candidate ``idx`` strictly beat every other candidate?"""
        scores = self.normed(fact, lang, cands, logps)
        return scores[idx] > max(v for k, v in enumerate(scores) if k != idx)

    def gold_first(self, fact: Fact, lang: str, logps: Sequence[float]) -> bool | None:
        """Is the gold object (index 0) strictly the best candidate? None without rivals."""
        cands = self.candidates(fact, lang)
        if len(cands) < 2:
            return None
        return self.first(fact, lang, cands, logps, 0)

    def best(self, fact: Fact, lang: str, logps: Sequence[float]) -> str:
        cands = self.candidates(fact, lang)
        scores = self.normed(fact, lang, cands, logps)
        return cands[max(range(len(cands)), key=lambda k: scores[k])]


def _edit_text(kind: str, fact: Fact, lang: str, obj: str) -> str:
    """The object's text as it follows the prompt (causal: cut-mode target, e.g. " Paris")."""
    if kind == "causal":
        return causal_prompt_and_target(fact.prompt(lang), obj, mode="cut")[1]
    return obj


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _stored(store: RecordStore | None, key: str, meta: dict, compute: Callable[[], dict]) -> dict:
    """The measurements kept under ``key`` in ``store``, else ``compute()``'s (then kept)."""
    rec = store.get(key) if store is not None else None
    if rec is None:
        rec = compute()
        if store is not None and key not in store:
            store.add(key, {**meta, **rec})
    return rec


@dataclass
class _Setup:
    """What both protocols prepare: the model, the ranker, the facts and their LIKN by id,
    each fact's unrelated facts (seeded by fact) and the model's fingerprint (store keys)."""

    family: ModelFamily
    ranker: _Ranker
    langs: tuple[str, ...]
    by_id: dict[str, Fact]
    fl: dict[str, FactLIKN]
    unrelated: dict[str, list[str]]
    fp: str

    @classmethod
    def of(cls, model, tokenizer, facts: Sequence[Fact], likn: LIKNReport, *, causal_mode: str, rank_by: str,
           n_unrelated: int, seed: int) -> "_Setup":
        family = get_family(model)
        ranker = _Ranker(family, tokenizer, causal_mode, rank_by)
        ids = [f.id for f in facts]
        unrelated = {f.id: unrelated_sample(f.id, ids, n_unrelated, seed) for f in facts}
        return cls(family, ranker, likn.languages, {f.id: f for f in facts}, likn.by_id(), unrelated,
                   model_fingerprint(family.model))

    def edits(self, fact_id: str, random_control: bool, seed: int) -> list[Edit]:
        return plan_edits(self.fl[fact_id], random_control=random_control, num_layers=self.family.num_layers,
                          ffn_width=self.family.ffn_width, seed=seed)

    def record(self, protocol: str, fact: Fact, rows: list[dict], **extra) -> dict:
        """One fact's record: its LIKN sizes, ``extra``, its unrelated facts and the rows."""
        fl = self.fl[fact.id]
        return dict(protocol=protocol, fact_id=fact.id, relation=fact.relation, likn_size=len(fl.shared),
                    sizes={l: len(fl.per_lang[l]) for l in self.langs}, **extra,
                    unrelated_ids=self.unrelated[fact.id], rows=rows)


# ----------------------------------------------------------------------------------------
# protocol 1: suppression / enhancement of activations


def activation_protocol(model, tokenizer, facts: Sequence[Fact], likn: LIKNReport, *, n_unrelated: int = 5,
                        seed: int = 0, causal_mode: str = "cut", rank_by: str = "mean",
                        unrelated_accuracy: bool = True, random_control: bool = True,
                        store: RecordStore | None = None, progress: bool = True, batch_size: int = 64) -> list[dict]:
    """Suppress (×0) / enhance (×2) every edit's neurons at the target position; one record
    per fact with a row per (edit, measured language, mode). See the module docstring."""
    run = _Setup.of(model, tokenizer, facts, likn, causal_mode=causal_mode, rank_by=rank_by,
                    n_unrelated=n_unrelated, seed=seed)
    family, ranker, langs = run.family, run.ranker, run.langs
    edits = {f.id: run.edits(f.id, random_control, seed) for f in facts}
    # jobs per query (fact j, lang): rows (source fact i, edit index, mode, kind)
    jobs: dict[tuple[str, str], list[tuple[str, int, str, str]]] = {}
    for f in facts:
        for lang in langs:
            jobs.setdefault((f.id, lang), []).extend((f.id, e, m, "related") for e in range(len(edits[f.id])) for m in MODES)
            for j in run.unrelated[f.id]:
                jobs.setdefault((j, lang), []).extend((f.id, e, m, "unrelated")
                                                      for e in range(len(edits[f.id])) for m in MODES)
    results: dict[tuple[str, str], dict] = {}
    for (j, lang), rows in tqdm(jobs.items(), desc="activation edits", disable=not progress):
        fact = run.by_id[j]
        interventions = [(edits[i][e].neurons, MODE_FACTORS[m]) for i, e, m, _ in rows]
        cands = ranker.candidates(fact, lang)
        need_all = unrelated_accuracy
        related_rows = [r for r, row in enumerate(rows) if row[3] == "related"]
        key = content_key(["activation", run.fp, ranker.query(fact, lang, cands[0]), cands, causal_mode,
                           [[list(map(list, n)), f] for n, f in interventions], need_all])

        def measure() -> dict:
            clean, after = [], []
            for c_idx, cand in enumerate(cands):
                prompt, target = ranker.query(fact, lang, cand)
                use = list(range(len(rows))) if (c_idx == 0 or need_all) else related_rows
                c0, scores = scores_under_interventions(family, tokenizer, prompt, target,
                                                        [interventions[r] for r in use], objective="logprob",
                                                        batch_size=batch_size)
                full = [float("nan")] * len(rows)
                for r, s in zip(use, scores.tolist()):
                    full[r] = s
                clean.append(c0)
                after.append(full)
            return {"clean": clean, "after": after}

        rec = _stored(store, key, {"fact_id": j, "lang": lang, "protocol": "activation"}, measure)
        results[(j, lang)] = {"rows": rows, **rec}
    # assemble per-fact records
    cells: dict[tuple[str, int, str, str], dict] = {}
    for (j, lang), res in results.items():
        fact = run.by_id[j]
        clean = res["clean"]
        acc0 = ranker.gold_first(fact, lang, clean)
        for r, (i, e, m, kind) in enumerate(res["rows"]):
            after = [res["after"][c][r] for c in range(len(clean))]
            cell = cells.setdefault((i, e, m, lang), {"unrelated": [], "unrel_acc0": [], "unrel_acc1": []})
            change = relative_change(after[0], clean[0], log=True)
            acc1 = ranker.gold_first(fact, lang, after) if not any(math.isnan(a) for a in after) else None
            if kind == "related":
                cell.update(related=change, logp_before=clean[0], logp_after=after[0], correct_before=acc0,
                            correct_after=acc1)
            else:
                cell["unrelated"].append(change)
                if acc0 is not None and acc1 is not None:
                    cell["unrel_acc0"].append(acc0)
                    cell["unrel_acc1"].append(acc1)
    records = []
    for f in facts:
        rows = []
        for e, edit in enumerate(edits[f.id]):
            for lang in langs:
                for m in MODES:
                    c = cells[(f.id, e, m, lang)]
                    rows.append(dict(edit=edit.name, setting=setting_label(edit.name, lang), lang=lang, mode=m,
                                     n_neurons=len(edit.neurons), related=c["related"],
                                     unrelated=_mean(c["unrelated"]),
                                     unrelated_each=c["unrelated"], correct_before=c["correct_before"],
                                     correct_after=c["correct_after"], unrelated_correct_before=sum(c["unrel_acc0"]),
                                     unrelated_correct_after=sum(c["unrel_acc1"]), unrelated_scored=len(c["unrel_acc0"])))
        records.append(run.record("activation", f, rows))
    return records


# ----------------------------------------------------------------------------------------
# protocol 2: value-vector edits


def _value_layout(run: _Setup, f: Fact, new: dict[str, str], unrelated_accuracy: bool) -> tuple[list, dict]:
    """The query list of one fact: per language, the related candidates (gold first) and the
    new object's position among them, then the unrelated facts' gold (and candidates)."""
    pairs: list[tuple[str, str]] = []
    layout: dict[str, dict] = {}
    for lang in run.langs:
        cands = run.ranker.candidates(f, lang)
        if new[lang] not in cands:
            cands.append(new[lang])
        start = len(pairs)
        pairs += [run.ranker.query(f, lang, c) for c in cands]
        unrel = []
        for j in run.unrelated[f.id]:
            g = run.by_id[j]
            uc = run.ranker.candidates(g, lang) if unrelated_accuracy else [g.target(lang)]
            unrel.append((j, len(pairs), len(uc)))
            pairs += [run.ranker.query(g, lang, c) for c in uc]
        layout[lang] = dict(cands=cands, start=start, new_index=cands.index(new[lang]), unrel=unrel)
    return pairs, layout


def _value_row(run: _Setup, f: Fact, edit: Edit, lang: str, lay: dict, clean: list[float], a: list[float],
               old: dict[str, str], new: dict[str, str]) -> dict:
    """One (edit, measured language) row of the value protocol from the clean and edited scores."""
    ranker = run.ranker
    s, n = lay["start"], len(lay["cands"])
    b_c, a_c = clean[s:s + n], a[s:s + n]
    ni = lay["new_index"]

    def first(scores, idx):
        return ranker.first(f, lang, lay["cands"], scores, idx)

    unrel_changes, u0, u1 = [], 0, 0
    scored = 0
    for j, us, un in lay["unrel"]:
        unrel_changes.append(relative_change(a[us], clean[us], log=True))
        if un >= 2:
            g = run.by_id[j]
            acc0 = ranker.gold_first(g, lang, clean[us:us + un])
            acc1 = ranker.gold_first(g, lang, a[us:us + un])
            scored += 1
            u0 += bool(acc0)
            u1 += bool(acc1)
    return dict(edit=edit.name, setting=setting_label(edit.name, lang), lang=lang,
                n_neurons=len(edit.neurons), old=old[lang], new=new[lang],
                related=relative_change(a_c[0], b_c[0], log=True), logp_old_before=b_c[0], logp_old_after=a_c[0],
                logp_new_before=b_c[ni], logp_new_after=a_c[ni],
                log10_new_ratio=(a_c[ni] - b_c[ni]) / math.log(10),
                correct_before=first(b_c, 0), correct_after=first(a_c, 0),
                new_first_before=first(b_c, ni), new_first_after=first(a_c, ni),
                unrelated=_mean(unrel_changes),
                unrelated_each=unrel_changes, unrelated_correct_before=u0, unrelated_correct_after=u1,
                unrelated_scored=scored)


def value_protocol(model, tokenizer, facts: Sequence[Fact], likn: LIKNReport, *, n_unrelated: int = 5, seed: int = 0,
                   causal_mode: str = "cut", rank_by: str = "mean", unrelated_accuracy: bool = True,
                   random_control: bool = True, lambda_old: float = 1.0, lambda_new: float = 8.0,
                   signed: bool = True, store: RecordStore | None = None, progress: bool = True,
                   batch_size: int = 16) -> list[dict]:
    """Dai et al.'s value-vector update old -> new for every edit (steps applied in order on
    the same weights, restored bit for bit after each edit), measured in every language.
    ``signed``: orient each neuron's update by the sign of its activation on the fact's
    prompt (see :func:`apply_value_edit`; needed for gated MLPs, a no-op for positive
    neurons)."""
    run = _Setup.of(model, tokenizer, facts, likn, causal_mode=causal_mode, rank_by=rank_by,
                    n_unrelated=n_unrelated, seed=seed)
    family, ranker, langs = run.family, run.ranker, run.langs
    records = []
    for f in tqdm(facts, desc="value edits", disable=not progress):
        new = parallel_new_object(f, langs, seed=seed)
        if new is None:
            records.append(dict(protocol="value", fact_id=f.id, relation=f.relation, skipped="no parallel new object",
                                likn_size=len(run.fl[f.id].shared), rows=[]))
            continue
        old = {l: f.target(l) for l in langs}
        # the embeddings of the value-vector update are those of the object as the model
        # reads it (BPE models: " Paris" after the prompt), without any sentence suffix
        old_text = {l: _edit_text(family.kind, f, l, old[l]) for l in langs}
        new_text = {l: _edit_text(family.kind, f, l, new[l]) for l in langs}
        pairs, layout = _value_layout(run, f, new, unrelated_accuracy)
        edits = run.edits(f.id, random_control, seed)
        key = content_key(["value", run.fp, f.id, causal_mode, rank_by, pairs,
                           [[e.name, [[l, list(map(list, ns))] for l, ns in e.steps]] for e in edits],
                           lambda_old, lambda_new, signed])
        queries = {l: ranker.query(f, l, old[l]) for l in langs} if signed else None

        def measure() -> dict:
            clean = score_pairs(family, tokenizer, pairs, batch_size=batch_size)
            after = {}
            for edit in edits:
                backup = apply_value_edit(family, tokenizer, edit, old_text, new_text, lambda_old=lambda_old,
                                          lambda_new=lambda_new, queries=queries)
                try:
                    after[edit.name] = score_pairs(family, tokenizer, pairs, batch_size=batch_size)
                finally:
                    backup.restore()
            return {"clean": clean, "after": after}

        rec = _stored(store, key, {"fact_id": f.id, "protocol": "value"}, measure)
        rows = [_value_row(run, f, edit, lang, layout[lang], rec["clean"], rec["after"][edit.name], old, new)
                for edit in edits for lang in langs]
        records.append(run.record("value", f, rows, new=new))
    return records
