"""amig-plugin: knowledge-neuron localization (AMIG, KN), language-independent (LIKN) and
degenerate (DKN) knowledge neurons, registered inside EasyEdit.

The core (models, attribution, neurons, intervene, data) never imports ``easyeditor``;
only :mod:`amig_plugin.easyedit` does, lazily.
"""

__version__ = "0.1.0"


def register(force: bool = False) -> dict:
    """Add ``AMIG`` and ``LIKN`` to EasyEdit's ``ALG_DICT``, the ``fact_check`` metric, and
    a ``BaseEditor`` hook (CPU fallback for GPU YAMLs, a clear error for model names EasyEdit
    cannot load); idempotent; imports ``easyeditor`` on the first call, nothing at
    ``import amig_plugin``. See :func:`amig_plugin.easyedit.registration.register`."""
    from .easyedit.registration import register as _register

    return _register(force=force)
