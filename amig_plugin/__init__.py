"""amig-plugin: knowledge-neuron localization (AMIG, KN), language-independent (LIKN) and
degenerate (DKN) knowledge neurons, registered inside EasyEdit.

The core (models, attribution, neurons, intervene, data) never imports ``easyeditor``;
only :mod:`amig_plugin.easyedit` does, lazily.
"""

__version__ = "0.1.0"
