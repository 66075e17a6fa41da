"""Defaults shared by the engine, the CLI, the EasyEdit hparams and run configs (no torch
import here: the CLI and the hparams validation read them before any model is loaded)."""

#: Path points per forward/backward batch of the IG engine. An execution setting: it changes
#: speed and memory, never the attributions (caches and stores leave it out of their keys).
#: Each batch reads every weight twice, and for causal LMs one batch that holds all of a
#: fact's path points (m = 20 x 12 GPT-2-small layers = 240 rows) never runs a block on a
#: single row; 256 rows of Gemma-3-270M's 262k-token vocabulary take 268 MB.
DEFAULT_IG_BATCH_SIZE = 256

#: Version of the attribution and selection algorithms (IG engine, AMIG baselines, τ/sharing
#: selection, DKN detection). Part of every cache key: raise it whenever a change alters the
#: neurons or scores a localization returns, so records computed before are never served.
ATTRIBUTION_VERSION = 2
