"""Risk views of a run beyond its own liquidations: what the venue may do to its positions.

- ``adl``: auto-deleveraging: each position's ADL ranking score, and a stress scenario
  that takes one leg of a hedge away.

The public names of each module, one import line per module (re-exported: F401 is off).
"""

from .adl import AdlStress, adl_formula, adl_ranks, adl_score, adl_stress  # noqa: F401
