"""The subcommands of ``amig``, one module each; :mod:`amig_plugin.cli` builds its parser from them.

- ``common``: what the commands share (IG options, model loading, ``--data``/``--langs``/``--n``/``--json``
  and the hidden deprecated aliases of their old spellings)
- ``options``: argparse types that check a value before anything is loaded
- ``localize``: one fact's knowledge neurons
- ``demo``: the quick tour (``--full``: with the LIKN and DKN sections)
- ``likn``: language-independent knowledge neurons and the cross-lingual editing experiment
- ``dkn``: degenerate knowledge neurons (``amig dkn``) and fact-checking (``amig factcheck``)
- ``run``: run configs (``amig run``, ``merge``, ``report``, ``diff``)
- ``compare``: AMIG vs EasyEdit's editing methods

Each command module defines ``add_commands(subparsers)`` (argparse sub-parsers whose ``func``
takes the parsed args and returns an exit code). Facts come from :mod:`amig_plugin.sources`.
"""

from . import compare, demo, dkn, likn, localize, run

MODULES = (localize, demo, likn, dkn, run, compare)
