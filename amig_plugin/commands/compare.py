"""``amig compare``: AMIG vs EasyEdit's KN, ROME, MEMIT and FT on the same requests.

    amig compare [--model gemma-3-270m] [--methods AMIG,KN,ROME,MEMIT,FT-L] [--n 20]
                 [--data FACTS|BMLAMA_DIR|BENCHMARK_FILE|MZSRE_DIR [--format F]] [--langs en,zh]
                 [--limit METHOD=N] [--paired-against ROME|METHOD|none] [--hparams-dir hparams]
                 [--hparams METHOD=YAML] [--set METHOD.key=value] [--mom2 local|off]
                 [--mom2-corpus facts+pydoc|facts|pydoc|stdlib|facts+pydoc+stdlib|FILE]
                 [--mom2-tokens 20000] [--json results.json] [--out RECORDS_DIR] [--fresh] [--threads N]

Every method runs from its own YAML (``<hparams-dir>/<METHOD>/<model>.yaml``) through
EasyEdit's editor and metrics on one shared model, with a reset after each request; one
markdown table is printed (see :mod:`amig_plugin.easyedit.compare`). A method is a label:
the folder of its YAMLs, whose ``alg_name`` (AMIG, LIKN, KN, ROME, MEMIT, FT) picks the
algorithm; shipped: AMIG, AMIG-OPT (the optimized value-vector edit), AMIG-KN (our fast KN),
KN (EasyEdit's), ROME, MEMIT, FT-L, FT-M (EasyEdit GitHub main only) and LIKN.
``--limit KN=10`` runs one method on the first N requests only.

Cross-lingual editing (MzsRE): ``--data`` a folder of ``en-<xx>.json`` pair files (or one
file) and ``--langs en,zh,fr,es,ru,th``: the edit is made in English and scored in every
language with EasyEdit's metrics (reliability, generality, locality, portability; see
:mod:`amig_plugin.easyedit.crosslingual_report`); LIKN edits once per (request, language),
the neurons shared by the English and that language's localizations. One table per
language (mean and 95 % bootstrap interval), ``<json>.csv`` and ``<json>-<lang>.png``.

Paired against ROME (``--paired-against METHOD``; default ROME when it runs): every other
method minus that one on the same requests, per column, with an interval that resamples
requests (``<json>-paired.csv``, ``<json>-paired.png``); it answers "where does a method land
against ROME?" where two methods' own intervals overlap.

``--data``: a fact source (shipped facts, a BMLAMA folder, a JSONL fact file; see
:mod:`amig_plugin.sources`) or requests from a benchmark file (ZsRE, CounterFact, KnowEdit, MzsRE, our
JSONL facts, BMLAMA; detected from the content or named with ``--format``, see
:mod:`amig_plugin.data.edits`); the first ``--n`` are edited. Where the file has no original
answer, the ground truth is the model's own greedy prediction, and the table says so.

Kill-safe and resumable: one record per request and method is appended to
``--out DIR`` (default: next to ``--json``) as soon as it is done
(:mod:`amig_plugin.compare_records`); a restarted run skips what is recorded, whatever
killed it. Under ``torchrun`` (``RANK``/``WORLD_SIZE``) each process edits every
WORLD_SIZE-th request into its own record file; the process that finds every record
present prints the table. ``--fresh`` starts a new records folder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from pathlib import Path

from . import options as opt
from .common import add_alias, add_data_option, add_json_option, add_n_option, add_runtime_options


def _model_stem(name: str) -> str:
    from ..loading import DEFAULT_MODEL, is_embedded_name

    if is_embedded_name(name):
        return DEFAULT_MODEL
    return os.path.basename(os.path.normpath(name))


def _hparams_path(method: str, args, stem: str) -> str:
    for item in args.hparams or []:
        key, _, path = item.partition("=")
        if key.upper() == method and path:
            return path
    candidates = [Path(args.hparams_dir) / method / f"{stem}.yaml"]
    repo_root = Path(__file__).resolve().parents[2]
    candidates.append(repo_root / "hparams" / method / f"{stem}.yaml")
    for c in candidates:
        if c.is_file():
            return str(c)
    known = sorted({d.name for root in (Path(args.hparams_dir), repo_root / "hparams") if root.is_dir()
                    for d in root.iterdir() if (d / f"{stem}.yaml").is_file()})
    from ..checks import did_you_mean

    raise ValueError(f"unknown method {method!r}{did_you_mean(method, known)}: no {method} hparams for model {stem!r} "
                     f"in {[str(c.parent.parent) for c in candidates]}; methods with a YAML for it: "
                     f"{', '.join(known) or 'none'}; or pass --hparams {method}=PATH")


def _overrides(args) -> dict:
    import yaml

    out: dict = {}
    for item in args.set or []:
        target, eq, value = item.partition("=")
        method, dot, key = target.partition(".")
        if not eq or not dot or not key:
            raise ValueError(f"--set {item!r}: use METHOD.key=value, e.g. AMIG.steps=10")
        out.setdefault(method.upper(), {})[key] = yaml.safe_load(value)
    return out


#: hparams that say where files are, not what is computed: left out of the records' settings
#: (the statistics are identified by ``mom2_dataset``, which names the corpus and the token cap)
_LOCATION_KEYS = ("stats_dir",)


def _settings_of(hparams) -> dict:
    import dataclasses

    d = dict(vars(hparams))  # dataclass fields and the attributes of our adaptations (post_norm_targets)
    if dataclasses.is_dataclass(hparams):
        d.update(dataclasses.asdict(hparams))
    return {k: (v if isinstance(v, (int, float, str, bool, list, dict, type(None))) else str(v))
            for k, v in d.items() if k not in _LOCATION_KEYS}


def cmd_compare(args) -> int:
    import torch

    from ..localization import cache_root
    from ..easyedit import compare as C
    from ..easyedit.compat import easyedit_flavour, import_easyeditor
    from ..easyedit.evaluate import summarize
    from ..compare_records import CompareRecords
    from ..loading import DEFAULT_MODEL, load_model
    from ..models import get_family
    from ..data.edits import mzsre_files

    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip().upper() for m in args.methods.split(",") if m.strip()]
    limits = _limits(args, methods)
    reference = _paired_reference(args, methods)
    model_name = args.model or DEFAULT_MODEL
    stem = _model_stem(model_name)
    overrides = _overrides(args)
    paths = {m: _hparams_path(m, args, stem) for m in methods}
    hparams = {m: C.load_method_hparams(m, paths[m], model_name=model_name) for m in methods}
    algs = {m: C.yaml_algorithm(paths[m]) for m in methods}
    for method, kv in overrides.items():
        if method not in hparams:
            raise ValueError(f"--set for {method}, which is not among --methods {methods}")
        for key, value in kv.items():
            if not hasattr(hparams[method], key):
                raise ValueError(f"--set {method}.{key}: {type(hparams[method]).__name__} has no field {key!r}")
            setattr(hparams[method], key, value)
        if algs[method] == "AMIG":
            from ..easyedit.methods.amig import AMIGHyperParams

            hparams[method] = AMIGHyperParams.from_dict(hparams[method].to_dict(), source="--set AMIG")

    lang, other = _edit_langs(args)
    facts_path = getattr(args, "facts", None)  # the deprecated --facts
    if args.data and facts_path:
        raise ValueError("give either --data (a benchmark file) or --facts, not both")
    source = facts_path or args.data
    from_requests = bool(args.data) and args.data != "shipped" and (
        not Path(args.data).expanduser().is_dir() or bool(mzsre_files(Path(args.data).expanduser())))
    if not from_requests:  # a fact source: shipped, a BMLAMA folder, a JSONL fact file (--facts)
        from ..sources import load_fact_source, source_kind

        folder = source_kind(source, [lang]) != "shipped" and Path(source).expanduser().is_dir()
        facts = load_fact_source(source, [lang] + ([other] if other and folder else []), template_lang=lang,
                                 restrict=False).facts

    import_easyeditor()
    t0 = time.time()
    model, tok = load_model(model_name, device=args.device)
    family = get_family(model)
    masked = family.kind == "masked"
    print(f"model: {model_name} ({type(model).__name__}), loaded in {time.time() - t0:.1f}s; easyeditor {easyedit_flavour()}",
          file=sys.stderr)
    gt_note = ""
    eval_langs: list = []
    if from_requests:
        from ..data.edits import load_requests, with_model_ground_truth
        from ..compare_records import CachedPredictions
        from ..localization import shown_path
        from ..models.generation import GREEDY_VERSION, greedy_continuation

        loaded = load_requests(args.data, args.format, lang=lang, seed=args.seed, limit=args.n,
                               langs=args.langs)
        if any(r.other_languages for r in loaded):  # MzsRE: every further --langs language is scored
            eval_langs = list(args.langs[1:])
            other = None
        missing = sum(r.ground_truth is None for r in loaded)
        if missing:
            # LIKN localizes the fact in the other languages too: their ground truth is needed there only
            predict = CachedPredictions(greedy_continuation, model, tok,
                                        cache_root() / "ground-truth" / f"{stem}.jsonl",
                                        version=GREEDY_VERSION, fresh=args.fresh)
            loaded = with_model_ground_truth(loaded, model, tok, predict=predict,
                                             languages=eval_langs if "LIKN" in algs.values() else ())
            if predict.hits:
                print(f"ground truth: {predict.hits} answers from the cache ({shown_path(predict.store.path)}), "
                      f"{predict.computed} predicted now", file=sys.stderr)
            gt_note = (f"ground truth: the model's own greedy prediction for {missing} of {len(loaded)} requests "
                       f"({args.data} has no original answer for them)")
            print(gt_note, file=sys.stderr)
        blank = [r for r in loaded if not r.ground_truth]
        if blank:  # AMIG and KN localize the ground truth: a request without one cannot be edited by them
            print(f"{len(blank)} of {len(loaded)} requests left out: the model's greedy continuation is blank "
                  f"(e.g. {blank[0].prompt!r}), so there is no ground truth to localize; give the file "
                  f"'answers' to keep them", file=sys.stderr)
            loaded = [r for r in loaded if r.ground_truth]
        requests = [r.to_easyedit(other, eval_langs) for r in loaded]
    else:
        requests = C.build_requests(facts, args.n, lang=lang, other_lang=other, seed=args.seed, masked=masked)
    fingerprint = C.requests_fingerprint(requests)
    json_file, out_dir = _outputs(args)
    out_path = Path(json_file) if json_file else cache_root() / "compare" / f"{stem}-{lang}-{args.n}-{fingerprint}.json"
    records_dir = Path(out_dir) if out_dir else out_path.with_suffix(".records")
    if args.fresh and records_dir.exists():
        import shutil

        shutil.rmtree(records_dir)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    records = CompareRecords(records_dir, rank=rank)
    mine = set(range(rank, len(requests), world))
    results = {}
    lang_rows: list = []  # per method: {"method", "metrics": {language: [EasyEdit metrics]}, "seconds_per_edit", "note"}
    print(f"{len(requests)} requests from {source or 'the shipped facts'} (lang {lang}, "
          + (f"scored in {','.join([lang] + eval_langs)}" if eval_langs else _portability_note(requests, other))
          + f"); results: {out_path}; records: {records_dir}"
          + (f"; rank {rank} of {world}" if world > 1 else ""), file=sys.stderr)

    stats_dir = args.stats_dir or str(cache_root() / "easyedit-stats")
    pre_edit: dict = {}  # the unedited model's metrics per request, scored once for every method
    notes: dict = {}
    rows = []
    for method in methods:
        h = hparams[method]
        settings = _settings_of(h)
        if algs[method] in ("ROME", "MEMIT"):
            if masked:
                rows.append({"method": method, "error": "ROME/MEMIT need a causal LM"})
                continue
            notes[method] = C.prepare_covariance(model, tok, h, mode=args.mom2, corpus=args.mom2_corpus,
                                                 stats_dir=stats_dir, max_tokens=args.mom2_tokens)
            print(notes[method], file=sys.stderr)
            settings = _settings_of(h)
        key_settings = {"model": model_name, "seed": args.seed, "hparams": settings}
        n_method = min(len(requests), limits.get(method, len(requests)))
        if algs[method] == "LIKN":  # one edit per (request, language): the neurons shared by en and L
            if not eval_langs:
                rows.append({"method": method, "error": "LIKN needs requests in several languages (MzsRE with --langs en,xx,...)"})
                continue
            jobs = [C.likn_request(loaded[i], x) for i in range(n_method) for x in eval_langs]
            job_request = [i for i in range(n_method) for _ in eval_langs]
            job_lang = [x for _ in range(n_method) for x in eval_langs]
        else:
            jobs, job_request, job_lang = list(requests[:n_method]), list(range(n_method)), [None] * n_method
        assigned = [j for j, i in enumerate(job_request) if i in mine]
        todo = [j for j in assigned if not records.done(jobs[j], method, key_settings)]
        if not todo:
            print(f"{method}: reusing saved results", file=sys.stderr)
        else:
            if len(todo) < len(assigned):
                print(f"{method}: resuming, {len(assigned) - len(todo)} of {len(assigned)} requests already recorded",
                      file=sys.stderr)
            print(f"{method}: editing {len(todo)} requests with {paths[method]}", file=sys.stderr)
            editor, captured = C.capturing_editor(algs[method], h, model, tok)
            error = None
            began = time.time()
            for k, i in enumerate(todo):
                if k:  # EasyEdit's own output runs between these lines: a plain progress line with ETA
                    spent = time.time() - began
                    print(f"{method}: {k}/{len(todo)} done, {spent:.0f} s, ETA {spent / k * (len(todo) - k):.0f} s",
                          file=sys.stderr)
                captured.clear()
                start = time.time()
                try:
                    # EasyEdit prints progress to stdout: keep stdout for the table
                    pre_key = C.pre_edit_key(jobs[i], h)
                    pre = [{"pre": pre_edit[pre_key]}] if pre_key in pre_edit else None
                    with contextlib.redirect_stdout(sys.stderr):
                        metrics = C.run_method(editor, [jobs[i]], seed=args.seed, raw=algs[method] == "LIKN", pre=pre)
                    if pre_key is not None and pre_key not in pre_edit:
                        pre_edit[pre_key] = copy.deepcopy(metrics[0]["pre"])
                except Exception as exc:  # keep the other methods' rows; this request is retried on restart
                    if os.environ.get("AMIG_DEBUG"):
                        raise
                    error = f"{type(exc).__name__}: {str(exc)[:120]}"
                    print(f"{method} failed on request {i}: {error}", file=sys.stderr)
                    break
                records.add(jobs[i], method, key_settings, C.slim_metrics(metrics)[0],
                            seconds=time.time() - start,
                            extra={"amig_edit": C._clean(captured[0])} if captured else None)
            if error is not None:
                rows.append({"method": method, "error": error})
                continue
            print(f"{method}: done", file=sys.stderr)
        records.refresh()
        found = records.records(jobs, method, key_settings)
        if any(r is None for r in found):
            missing_n = sum(r is None for r in found)
            rows.append({"method": method, "error": f"{missing_n} requests not recorded yet (other ranks still running)"})
            continue
        metrics = [r["metrics"] for r in found]
        edits = [r["amig_edit"] for r in found if r.get("amig_edit") and algs[method] == "AMIG"]
        summary = summarize(metrics)
        if summary.get("seconds_per_edit") is None:  # no edit time from EasyEdit: edit + evaluation wall time
            summary["seconds_per_edit"] = sum(r["seconds"] or 0.0 for r in found) / len(found)
        note = C.method_note(algs[method], h, found, notes.get(method, ""))
        per_lang = {x: [r["metrics"] for r, jl in zip(found, job_lang) if jl in (None, x)] for x in eval_langs}
        lang_rows.append({"method": method, "metrics": {**per_lang, lang: metrics},
                          "seconds_per_edit": summary.get("seconds_per_edit"), "note": note})
        row = {"method": method, "summary": summary, "note": note, "settings": settings,
               "metrics": metrics, "amig_edits": edits}
        rows.append(row)
        results[method] = row
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "model": model_name, "requests": requests,
                                   "methods": results}, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, out_path)

    print(f"\n## amig compare: {model_name}, {len(requests)} requests ({lang}; portability = same fact in {other})\n")
    print(C.format_table(rows, other_lang=other, unedited_note=gt_note))
    for method, text in notes.items():
        print(f"\n- {text}")
    if gt_note:
        print(f"\n- {gt_note}")
    print("\n- metrics: EasyEdit's (teacher-forced token accuracy of target_new; locality = post-edit tokens equal "
          "pre-edit tokens)" + ("; masked LM: cloze versions (amig_plugin.easyedit.masked_lm)" if masked else "")
          + ("; prompts ending in CJK text scored without EasyEdit's ' ' join" if not masked else ""))
    tables, paired = _language_outputs(lang_rows, [lang] + eval_langs, lang, out_path, reference)
    if eval_langs:
        print("\n" + tables)
    elif paired:
        print("\n" + paired)
    if args.markdown:
        Path(args.markdown).write_text(C.format_table(rows, other_lang=other, unedited_note=gt_note) + "\n\n"
                                       + tables + "\n", encoding="utf-8")
    return 0 if all(r.get("summary") for r in rows) else 1


def _language_outputs(methods: list, langs: list, primary: str, out_path: Path,
                      reference: str | None = None) -> tuple[str, str]:
    """(per-language markdown tables, the paired table alone); writes ``<out>.csv`` and
    ``<out>-<lang>.png``, and with a ``reference`` method the paired differences against it
    (``<out>-paired.csv``, ``<out>-paired.png``). ``methods`` as
    :func:`~amig_plugin.easyedit.crosslingual_report.language_summary` takes them."""
    from ..easyedit import crosslingual_report as R

    if not methods:
        return "", ""
    all_rows, parts, plots = [], [], []
    for x in langs:
        rows = R.language_summary(methods, x, primary)
        all_rows += rows
        parts.append(R.format_language_table(rows, x, primary))
        plots.append((rows, x, None))
    pooled = R.pooled_summary(methods, langs, primary) if len(langs) > 1 else []
    if pooled:
        others = [x for x in langs if x != primary]
        all_rows += pooled
        parts.insert(0, f"### {primary} and the other {len(others)} languages pooled (mean [95% bootstrap CI])\n\n"
                     + R.format_overview_table([r for r in all_rows if r["lang"] == primary], pooled, langs, primary))
        plots.append((pooled, "other", f"{', '.join(others)} pooled: after an edit in {primary}"))
    paired_rows = R.paired_summary(methods, langs, primary, reference) if reference else []
    paired = R.format_paired_table(paired_rows, langs, primary)
    if paired:
        parts.insert(1 if pooled else 0, paired)
        R.write_paired_csv(paired_rows, out_path.with_name(f"{out_path.stem}-paired.csv"))

    def draw(what: str, plot, *args, **kwargs) -> None:
        try:
            plot(*args, **kwargs)
        except Exception as exc:  # a plot never costs the tables
            print(f"note: no plot for {what}: {type(exc).__name__}: {exc}", file=sys.stderr)

    for rows, x, title in plots:
        draw(x, R.plot_language, rows, x, out_path.with_name(f"{out_path.stem}-{x}.png"), title=title)
    if paired_rows:
        draw("the paired differences", R.plot_paired, paired_rows, langs,
             out_path.with_name(f"{out_path.stem}-paired.png"), primary)
    csv_path = R.write_csv(all_rows, out_path.with_suffix(".csv"))
    print(f"tables: {csv_path}; plots: {out_path.with_name(out_path.stem + '-<lang>.png')}", file=sys.stderr)
    return "\n\n".join(parts), paired


def _paired_reference(args, methods: list) -> str | None:
    """The method every other is paired against: ``--paired-against`` (checked against
    ``methods``; ``none``: no paired table), else ROME when it runs."""
    chosen = getattr(args, "paired_against", None)
    if chosen is None:
        return "ROME" if "ROME" in methods else None
    chosen = chosen.strip().upper()
    if chosen == "NONE":
        return None
    if chosen not in methods:
        raise ValueError(f"--paired-against {chosen}: {chosen} is not among --methods {','.join(methods)}; "
                         "name one of them, or 'none'")
    return chosen


def _limits(args, methods: list) -> dict:
    """``{method: N}`` from ``--limit METHOD=N``."""
    out = {}
    for item in args.limit or []:
        method, eq, value = item.partition("=")
        method = method.strip().upper()
        if not eq or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--limit {item!r}: use METHOD=N with N >= 1, e.g. KN=10")
        if method not in methods:
            raise ValueError(f"--limit {item!r}: {method} is not among --methods {','.join(methods)}")
        out[method] = int(value)
    return out


def _other_lang(text: str) -> str:
    return text if text in ("", "none") else opt.language(text)


def _data_path(text: str) -> str:
    return text if text == "shipped" else opt.existing_path(text)


def _edit_langs(args) -> tuple[str, str | None]:
    """(language of the edited prompts, language of the portability prompt or None) from ``--langs``
    (or the deprecated ``--lang`` / ``--other-lang``)."""
    lang = getattr(args, "lang", None) or args.langs[0]
    if hasattr(args, "other_lang"):
        other = None if args.other_lang in ("", "none") else args.other_lang
    else:
        other = args.langs[1] if len(args.langs) > 1 else None
    return lang, other


def _portability_note(requests: list, other: str | None) -> str:
    """What the requests' portability is scored on: the other language's prompt, the data's own
    portability pairs, or nothing."""
    kinds = sorted({kind for r in requests for kind in r.get("portability", {})})
    if not kinds:
        return "no portability pairs"
    return "portability: " + ", ".join(f"{other} prompt" if k == "other_language" else k for k in kinds)


def _outputs(args) -> tuple[str | None, str | None]:
    """(results JSON file, records folder); an ``--out`` ending in .json is the old spelling of ``--json``."""
    json_file, out_dir = args.json, args.out
    if out_dir and out_dir.lower().endswith(".json"):
        print("note: --out FILE.json is deprecated; use --json FILE (--out DIR is the records folder)", file=sys.stderr)
        json_file, out_dir = json_file or out_dir, None
    return json_file, out_dir


def _description() -> str:
    """The module docstring without its synopsis (argparse prints the usage itself)."""
    paragraphs = __doc__.split("\n\n")
    return "\n\n".join([paragraphs[0]] + [t for t in paragraphs[1:] if not t.startswith("    amig ")])


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("compare", help="compare AMIG with EasyEdit's KN, ROME, MEMIT, FT on the same requests",
                              description=_description(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model name or folder (default: the embedded Gemma-3-270M)")
    from ..defaults import DEFAULT_COMPARE_METHODS

    p.add_argument("--methods", default=",".join(DEFAULT_COMPARE_METHODS), help=f"comma list of method labels, each a "
                   f"folder of YAMLs under --hparams-dir whose alg_name is AMIG, LIKN, KN, ROME, MEMIT or FT (default "
                   f"{','.join(DEFAULT_COMPARE_METHODS)}; "
                   f"also shipped: AMIG-OPT, AMIG-KN, FT-M, LIKN)")
    add_n_option(p, 20, "number of requests (facts; default 20)")
    add_data_option(p, help="a fact source (a BMLAMA folder, a .jsonl fact file, 'shipped': default) or a "
                            "benchmark file of requests (ZsRE, CounterFact, KnowEdit, MzsRE; see --format)", type=_data_path)
    add_alias(p, "--facts", "--data", "facts", type=opt.existing_path)
    p.add_argument("--format", choices=["zsre", "counterfact", "knowedit", "mzsre", "facts", "bmlama"], default=None,
                   help="the format of a --data file (default: detected from the content)")
    p.add_argument("--langs", type=opt.language_list(1), default=["en", "zh"], metavar="EDIT[,PORTABILITY]",
                   help="language of the edited prompts, then of the portability prompt (default en,zh; one "
                        "language: no portability)")
    add_alias(p, "--lang", "--langs", "lang", type=opt.language)
    add_alias(p, "--other-lang", "--langs", "other_lang", type=_other_lang)
    p.add_argument("--limit", action="append", metavar="METHOD=N",
                   help="run METHOD on the first N requests only (repeatable), e.g. KN=10 for EasyEdit's slow KN")
    p.add_argument("--seed", type=int, default=0, help="seed of the request sample and the editing methods")
    p.add_argument("--paired-against", default=None, metavar="METHOD",
                   help="also tabulate every method minus METHOD on the same requests, with paired bootstrap "
                        "intervals (default: ROME when it runs; 'none': no such table)")
    p.add_argument("--hparams-dir", default="hparams", help="folder with <METHOD>/<model>.yaml")
    p.add_argument("--hparams", action="append", help="METHOD=PATH: the YAML of one method (repeatable)")
    p.add_argument("--set", action="append", help="METHOD.key=value: override one hparam (repeatable), e.g. AMIG.steps=10")
    p.add_argument("--mom2", choices=["local", "off"], default="local",
                   help="ROME/MEMIT covariance: from a local corpus (default) or off (ROME without mom2 adjustment)")
    p.add_argument("--mom2-corpus", default="facts+pydoc",
                   help="facts | pydoc | stdlib | facts+pydoc | facts+pydoc+stdlib (the largest) | a text file")
    p.add_argument("--mom2-tokens", type=opt.positive_int, default=20000, help="tokens of the corpus used for the statistics")
    p.add_argument("--stats-dir", default=None, help="where statistics are cached (default: <cache>/easyedit-stats)")
    add_json_option(p, "results JSON (default: <cache>/compare/<model>-<lang>-<n>-<requests>.json)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder of the kill-safe per-request records (default: next to --json, <json>.records)")
    add_alias(p, "--records", "--out", "out")
    p.add_argument("--markdown", default=None, metavar="FILE", help="also write the table to this file")
    p.add_argument("--fresh", action="store_true", help="start a new records folder and predict missing ground truths again (recompute everything)")
    add_runtime_options(p)
    p.set_defaults(func=cmd_compare)
