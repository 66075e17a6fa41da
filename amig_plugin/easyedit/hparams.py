"""Former home of :class:`AMIGHyperParams`, kept for ``amig compare``'s import; it lives in
:mod:`amig_plugin.easyedit.methods.amig.hparams`."""
from .methods.amig.hparams import REQUIRED_KEYS, VALID_KEYS, AMIGHyperParams, HParamsError  # noqa: F401
