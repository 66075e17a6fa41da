"""``amig report RUN_DIR``: tables (markdown + CSV) and PNG plots of a run, and a page.

Writes into ``RUN_DIR/report/``:

* ``index.md``: run facts (model, facts, languages, timing, failures), every table, every plot;
* ``overview.csv``: per study: expected / ok / failed / missing / duplicates units;
* ``<study>.csv`` (+ the markdown tables in ``index.md``): each study's summary rows;
* ``layers.csv``: knowledge neurons, LIKN and DKN per layer, method and language;
* ``failures.csv``: every failed unit with its error;
* ``layers.png`` (knowledge neurons, LIKN, DKN per layer; the paper's Figures 4 and 5),
  ``heatmap.png`` (layer x neuron attributions of one fact), ``overlap.png`` (English /
  Chinese overlap of the neuron sets), ``effect.png`` (suppression / enhancement effects).

Nothing here loads a model, unless ``recompute=True`` and no attribution tensor is stored
for the heatmap fact.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from pathlib import Path

from .pipeline.folder import RunFolder, atomic_write_text
from .pipeline.merge import merge_run
from .pipeline.studies import attribution_file


def _records(folder: RunFolder, study: str) -> list[dict]:
    path = folder.results_dir / f"{study}.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.3g}"
        return f"{x:.4g}"
    return str(x)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "_no rows_"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines)


def _flat_rows(rows: list[dict]) -> list[dict]:
    """``rows`` without mapping values (such as the LIKN controls: in summary.json and their
    own section, not in a table cell)."""
    return [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())
    return path


def _num_layers(folder: RunFolder, loc: list[dict]) -> int:
    for r in loc:
        if r["status"] == "ok" and r["result"]["settings"].get("layers"):
            return max(r["result"]["settings"]["layers"]) + 1
    return 1 + max((l for r in loc if r["status"] == "ok" for l, _ in r["result"]["neurons"]), default=0)


def layer_counts(loc: list[dict], likn: list[dict], dkn: list[dict], num_layers: int) -> list[dict]:
    """Rows (kind, method, lang, layer, count): neurons per layer summed over facts."""
    rows = []

    def add(kind, method, lang, neurons):
        c = Counter(int(l) for l, _ in neurons)
        for layer in range(num_layers):
            key = (kind, method, lang, layer)
            acc.setdefault(key, 0)
            acc[key] += c.get(layer, 0)

    acc: dict[tuple, int] = {}
    for r in loc:
        if r["status"] == "ok":
            add("knowledge neurons", r["method"], r["lang"], r["result"]["neurons"])
    for r in likn:
        if r["status"] == "ok":
            add("LIKN", r["method"], "+".join(r["result"]["languages"]), r["result"]["intersection"])
    for r in dkn:
        if r["status"] == "ok":
            add("DKN", r["method"], r["lang"], r["result"].get("degenerate_neurons", []))
    for (kind, method, lang, layer), count in acc.items():
        rows.append(dict(kind=kind, method=method, lang=lang, layer=layer, count=count))
    return rows


def _series(rows: list[dict], kind: str, method: str, num_layers: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in rows:
        if r["kind"] == kind and r["method"] == method:
            out.setdefault(r["lang"], [0] * num_layers)[r["layer"]] = r["count"]
    return out


def _heatmap_panels(folder: RunFolder, loc: list[dict], fact_id: str | None, recompute: bool, threads: int | None):
    """Panels (one per language) of the chosen fact's stored attribution tensors."""
    from . import plots

    with_file = [r for r in loc if r["status"] == "ok" and r["result"].get("attributions_file")]
    if fact_id is None:
        fact_id = with_file[0]["fact_id"] if with_file else next((r["fact_id"] for r in loc if r["status"] == "ok"), None)
    if fact_id is None:
        return [], None
    chosen = [r for r in loc if r["fact_id"] == fact_id and r["status"] == "ok"]
    method = chosen[0]["method"] if chosen else None
    chosen = [r for r in chosen if r["method"] == method]
    missing = [r for r in chosen if not (folder.path / attribution_file(r["fact_id"], r["lang"], r["method"])).is_file()]
    if missing and recompute:
        _recompute_attributions(folder, missing, threads)
    panels = []
    for r in chosen:
        name = attribution_file(r["fact_id"], r["lang"], r["method"])
        if not (folder.path / name).is_file():
            continue
        blob = folder.load_tensor(name)
        _check_attribution_blob(folder.path / name, blob)
        res = r["result"]
        prompt = res["prompts"][0] if res["prompts"] else ""
        if plots.renderable(prompt + res["target"]):
            label = f"{prompt.replace('<mask>', '___')} -> {res['target']}"
        else:
            label = "(prompt and target: see facts.jsonl)"
        title = (f"{r['lang']} | {r['method'].upper()} | {fact_id}: {label} | P(gold) = {res['clean_scores'][0]:.3g}, "
                 f"{len(res['neurons'])} knowledge neurons")
        panels.append({"attributions": blob["attributions"].numpy(), "layers": blob["layers"],
                       "neurons": [tuple(n) for n in res["neurons"]], "title": title})
    return panels, fact_id


def _check_attribution_blob(path: Path, blob) -> None:
    """An attribution file holds {"attributions": [L, W] float tensor, "layers": L ints, ...}."""
    import torch

    from .pipeline.folder import UnsafeFileError

    a = blob.get("attributions") if isinstance(blob, dict) else None
    layers = blob.get("layers") if isinstance(blob, dict) else None
    if (not isinstance(a, torch.Tensor) or a.dim() != 2 or not a.is_floating_point() or not isinstance(layers, list)
            or len(layers) != a.shape[0] or not all(isinstance(l, int) and not isinstance(l, bool) for l in layers)):
        raise UnsafeFileError(f"{path}: not an attribution file of this tool (expected a [layers, neurons] tensor and "
                              "its layer list); delete it and rerun `amig report --recompute-heatmap`")


def _recompute_attributions(folder: RunFolder, records: list[dict], threads: int | None) -> None:
    import torch

    from .neurons import localize
    from .pipeline.engine import Dist, load_run_model

    config = folder.read_config()
    if threads or config.threads:
        torch.set_num_threads(threads or config.threads)
    model, tok = load_run_model(config, Dist())
    for r in records:
        res = r["result"]
        settings = config.localize_settings(r["lang"])
        _, results = localize(model, tok, res["prompts"], res["target"], lang=r["lang"], method=r["method"],
                              fact_id=r["fact_id"], return_attributions=True, **settings)
        mean = torch.stack([x.attributions for x in results]).mean(0)
        folder.save_tensor(attribution_file(r["fact_id"], r["lang"], r["method"]),
                           {"attributions": mean, "layers": results[0].layers, "fact_id": r["fact_id"],
                            "lang": r["lang"], "method": r["method"], "prompts": res["prompts"], "target": res["target"]})


def overlap_data(loc: list[dict], method: str, langs: tuple[str, str], num_layers: int):
    a, b = langs
    by_fact: dict[str, dict[str, set]] = {}
    for r in loc:
        if r["status"] == "ok" and r["method"] == method and r["lang"] in langs:
            by_fact.setdefault(r["fact_id"], {})[r["lang"]] = {tuple(n) for n in r["result"]["neurons"]}
    per_layer = {f"{a} only": [0] * num_layers, "both": [0] * num_layers, f"{b} only": [0] * num_layers}
    sizes, jaccard = [], []
    for sets in by_fact.values():
        if a not in sets or b not in sets:
            continue
        A, B = sets[a], sets[b]
        for l, _ in A - B:
            per_layer[f"{a} only"][l] += 1
        for l, _ in A & B:
            per_layer["both"][l] += 1
        for l, _ in B - A:
            per_layer[f"{b} only"][l] += 1
        sizes.append(len(A & B))
        jaccard.append(len(A & B) / len(A | B) if A | B else float("nan"))
    return per_layer, sizes, jaccard


def unconverged_lines(rows: list[dict]) -> list[str]:
    """Warning lines for summary rows with unconverged IG results (``unconverged`` > 0)."""
    out = []
    for row in rows:
        if row.get("unconverged"):
            out += [f"**WARNING: {row['unconverged']} of {row.get('facts', '?')} {str(row.get('method', '')).upper()} "
                    f"localizations ({row.get('lang', '')}) are unconverged** (worst layer's relative completeness "
                    f"residual {row.get('max_rel_residual', float('nan')):.3g}): their neurons are unreliable; rerun with "
                    f"`localization.quadrature: steep` or `localization.on_unconverged: refine`.", ""]
    return out


def _timing(folder: RunFolder) -> dict:
    events = folder.read_log()
    starts = [e for e in events if e.get("event") == "start"]
    finishes = [e for e in events if e.get("event") == "finish"]
    return {"process_starts": len(starts), "clean_finishes": len(finishes),
            "interrupted_sessions": max(0, len(starts) - len(finishes)),
            "worlds": sorted({e.get("world", 1) for e in starts}),
            "versions": starts[-1].get("versions", {}) if starts else {},
            "git": starts[-1].get("git", {}) if starts else {}}


def build_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None, heatmap_fact: str | None = None,
                 recompute: bool = False, threads: int | None = None) -> Path:
    """Write the report of ``run_dir`` (see the module docstring); returns ``index.md``."""
    from . import plots

    folder = RunFolder(run_dir)
    if not folder.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml); start one with `amig run CONFIG`")
    summary = merge_run(folder.path)
    config = folder.read_config()
    out = Path(out) if out else folder.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("layers.png", "heatmap.png", "overlap.png", "effect.png", *[p.name for p in out.glob("overlap_*.png")]):
        (out / stale).unlink(missing_ok=True)
    loc = _records(folder, "localization")
    likn = _records(folder, "likn_overlap")
    dkn = _records(folder, "dkn")
    num_layers = _num_layers(folder, loc) if loc else 1
    from .loading import model_label

    model = model_label(Path(config.model).name if os.sep in config.model else config.model)
    title = f"{model} ({config.dtype}), {summary['facts']} facts, per layer"

    overview = [dict(study=name, expected=s["expected"], ok=s["ok"], failed=s["failed"], missing=s["missing"],
                     duplicates=s["duplicates"], extra=s["extra"], compute_seconds=s["compute_seconds"])
                for name, s in summary["studies"].items()]
    write_csv(out / "overview.csv", overview)
    failures = [dict(study=r["study"], unit=r["unit"], fact_id=r["fact_id"], lang=r["lang"], method=r["method"],
                     error=r.get("error")) for name in summary["studies"] for r in _records(folder, name)
                if r.get("status") != "ok"]
    write_csv(out / "failures.csv", failures, ["study", "unit", "fact_id", "lang", "method", "error"])
    for name, s in summary["studies"].items():
        if s["rows"]:
            write_csv(out / f"{name}.csv", _flat_rows(s["rows"]))
    counts = layer_counts(loc, likn, dkn, num_layers)
    write_csv(out / "layers.csv", counts, ["kind", "method", "lang", "layer", "count"])

    figures: list[tuple[str, str, str]] = []
    kinds = [("knowledge neurons", "knowledge neurons")]
    if "likn_overlap" in summary["studies"]:
        kinds.append(("LIKN", f"language-independent neurons (LIKN: {' & '.join(config.languages)})"))
    if "dkn" in summary["studies"]:
        kinds.append(("DKN", "degenerate knowledge neurons (DKN)"))
    panels = [[(f"{label}, {method.upper()}", _series(counts, kind, method, num_layers)) for method in config.methods]
              for kind, label in kinds]
    plots.layer_distribution(panels, num_layers, out / "layers.png", suptitle=title)
    figures.append(("layers.png", "Layer distribution",
                    "Share of each layer in the knowledge neurons, the language-independent neurons (LIKN) and the "
                    "degenerate neurons (DKN), summed over facts, per language (the paper's Figures 4 and 5)."))

    hm_panels, hm_fact = _heatmap_panels(folder, loc, heatmap_fact, recompute, threads)
    if hm_panels:
        plots.attribution_heatmap(hm_panels, out / "heatmap.png",
                                  suptitle=f"{model}: IG attributions of fact {hm_fact} (circles: knowledge neurons)")
        figures.append(("heatmap.png", "Attribution heatmap",
                        f"Layer x neuron IG attributions of fact {hm_fact} (mean over its prompts), knowledge neurons circled."))

    if len(config.languages) >= 2:
        langs = (config.languages[0], config.languages[1])
        for method in config.methods:
            per_layer, sizes, jac = overlap_data(loc, method, langs, num_layers)
            name = f"overlap_{method}.png" if len(config.methods) > 1 else "overlap.png"
            plots.overlap(per_layer, sizes, jac, out / name, langs,
                          title=f"{model}: {langs[0]} / {langs[1]} overlap of {method.upper()} neuron sets ({len(sizes)} facts)")
            figures.append((name, f"{langs[0]}/{langs[1]} overlap ({method.upper()})",
                            "Per layer: neurons found only in one language or in both (same fact, exact (layer, index)); "
                            "per fact: size of the shared set and Jaccard index."))

    effect_rows = summary["studies"].get("effect", {}).get("rows", [])
    if effect_rows:
        plots.effect_bars(effect_rows, out / "effect.png", title=f"{model}: suppress (x0) / enhance (x2) the neurons")
        figures.append(("effect.png", "Localization effect",
                        "Mean relative change of P(gold) on the fact's own prompts (related) and on other facts' prompts "
                        "(unrelated), 95% CI; random = as many random neurons."))

    timing = _timing(folder)
    lines = [f"# Run report: {config.name or folder.path.name}", "",
             f"- model: `{model}` ({config.dtype}, device {config.device_map or config.device}); methods: "
             f"{', '.join(config.methods)}; languages: {', '.join(config.languages)}",
             f"- data: {config.data['kind']} `{config.data.get('path') or 'shipped'}`, {summary['facts']} facts "
             f"(sample_facts, seed {config.seed})",
             f"- localization: m = {config.localization['steps']} IG steps ({config.localization['quadrature']}), objective {config.localization['objective']}, "
             f"tau {config.localization['tau'] or 'default (AMIG: en 0.3, zh 0.2; KN: 0.2)'}, share_p {config.localization['share_p']}",
             f"- complete: **{summary['complete']}**; failed units: **{summary.get('failed', 0)}**; process starts: {timing['process_starts']} "
             f"({timing['interrupted_sessions']} interrupted), process counts used: {timing['worlds']}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in timing['versions'].items() if k in ('python', 'torch', 'transformers', 'amig_plugin'))}"
             + (f"; git {timing['git'].get('commit', '')[:10]}{' (dirty)' if timing['git'].get('dirty') else ''}" if timing["git"] else ""),
             "", "## Units per study", "", markdown_table(overview), ""]
    if failures:
        lines += [f"{len(failures)} failed units (all listed in `failures.csv`); first ones:", "",
                  markdown_table(failures[:10], ["unit", "error"]), ""]
    for name, s in summary["studies"].items():
        if s["rows"]:
            lines += [f"## {name}", "", markdown_table(_flat_rows(s["rows"])), f"\n(`{name}.csv`)", ""]
            lines += unconverged_lines(s["rows"])
            if name == "likn_overlap":
                from .pipeline.studies import likn_overlap_markdown

                lines += [likn_overlap_markdown(s["rows"]), ""]
    lines += ["## Figures", ""]
    for fname, heading, caption in figures:
        lines += [f"### {heading}", "", f"![{heading}]({fname})", "", caption, ""]
    index = out / "index.md"
    atomic_write_text(index, "\n".join(lines) + "\n")
    return index


def diff_runs(run_a: str | os.PathLike, run_b: str | os.PathLike, study: str = "localization") -> dict:
    """Compare the ``study`` records two run folders have in common (e.g. a sharded run and
    a single-process one): for localization, the neuron sets and the largest difference of
    the neurons' scores; for other studies, equality of the results."""
    recs = []
    for run_dir in (run_a, run_b):
        folder = RunFolder(run_dir)
        merged = {}
        for path, store in folder.iter_records(study):
            for rec in store:
                unit = rec.get("unit", rec["key"])
                if unit not in merged or rec.get("attempt", 1) > merged[unit].get("attempt", 1):
                    merged[unit] = rec
        recs.append(merged)
    a, b = recs
    common = sorted(set(a) & set(b))
    same, differ, max_score_diff, status_differ = 0, [], 0.0, []
    for unit in common:
        ra, rb = a[unit], b[unit]
        if ra.get("status") != rb.get("status"):
            status_differ.append(unit)
            continue
        if ra.get("status") != "ok":
            same += ra.get("error") == rb.get("error")
            continue
        if study == "localization":
            sa = {tuple(n): s for n, s in zip(ra["result"]["neurons"], ra["result"]["scores"])}
            sb = {tuple(n): s for n, s in zip(rb["result"]["neurons"], rb["result"]["scores"])}
            if set(sa) == set(sb):  # the same set (the order by score may differ on near-ties)
                same += 1
                max_score_diff = max([max_score_diff, *(abs(sa[n] - sb[n]) for n in sa)])
            else:
                differ.append({"unit": unit, "only_a": sorted(set(sa) - set(sb)), "only_b": sorted(set(sb) - set(sa))})
        elif ra["result"] == rb["result"]:
            same += 1
        else:
            differ.append({"unit": unit})
    return {"study": study, "a": str(run_a), "b": str(run_b), "common": len(common), "same": same,
            "differ": differ, "status_differ": status_differ, "only_a": len(set(a) - set(b)),
            "only_b": len(set(b) - set(a)), "max_score_diff": max_score_diff}
