"""AMIG inside EasyEdit: from a YAML to EasyEdit's metrics, on the embedded Gemma-3-270M.

    python examples/easyedit_quickstart.py [--hparams hparams/AMIG/gemma-3-270m.yaml] [--steps 20]

What it does:
1. ``amig_plugin.register()`` adds ``AMIG`` and ``LIKN`` to EasyEdit's ``ALG_DICT`` and the
   ``fact_check`` metric, and makes GPU YAMLs run on CPU-only machines (see the README);
2. ``AMIGHyperParams.from_hparams(yaml)`` reads and validates the YAML;
3. ``load_editor(hparams)`` builds EasyEdit's editor (a ``BaseEditor`` subclass) on a model
   loaded by amig_plugin's loader -- EasyEdit's own loader knows neither Gemma nor BERT.
   For models EasyEdit can load itself (e.g. ``gpt2`` from the hub) plain
   ``easyeditor.BaseEditor.from_hparams(hparams)`` works too after ``register()``;
4. ``editor.edit(...)`` localizes the ground truth's knowledge neurons with AMIG, edits their
   value vectors, evaluates with EasyEdit's metrics and restores the weights.

Runs on CPU in about half a minute per edit (20 IG steps over all 18 layers).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import amig_plugin
from amig_plugin.easyedit import AMIGHyperParams, load_editor, summarize

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hparams", default=os.path.join(HERE, "..", "hparams", "AMIG", "gemma-3-270m.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="override the YAML's IG steps")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    amig_plugin.register()
    hparams = AMIGHyperParams.from_hparams(args.hparams)
    if args.steps is not None:
        hparams.steps = args.steps
    editor = load_editor(hparams)

    metrics, _model, weights_copy = editor.edit(
        prompts="The capital of France is",
        ground_truth="Paris",
        target_new="Rome",
        subject="France",
        rephrase_prompts="The capital city of France is",
        locality_inputs={"neighborhood": {"prompt": "The capital of Germany is", "ground_truth": "Berlin"}},
        portability_inputs={"other_language": {"prompt": "法国的首都是", "ground_truth": "罗马"}},
        verbose=False,
    )
    edit = weights_copy.edits[-1]
    print(f"edited {len(edit['neurons'])} knowledge neurons of '{edit['ground_truth']}' "
          f"(tau={edit['tau']}, completeness residual {edit['completeness_residual']:.2g}): {edit['neurons']}")
    print("EasyEdit metrics:", json.dumps(summarize(metrics), indent=1, default=float))


if __name__ == "__main__":
    main()
