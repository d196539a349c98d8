"""The one path from a run's configuration to the kernel's inputs (DESIGN.md §7, "One path").

``prepare_run(market, orders, config)`` validates a run's options against the market
and the venue and builds everything the kernel needs (``engine.driver.KernelInputs``):
the run's columns (a hedge-mode symbol's two legs, collateral coins), its margin modes
and leverages, the venue's rule versions in force over the market's bars, and the
strategy's targets or compiled callback. ``run()`` calls it once; every sweep backend
calls it for each run, with a ``PrepareCache`` so that what runs share (the venue,
the rule versions, the market's columns) is built once. A sweep therefore runs
exactly what ``run()`` runs.

- ``run``: ``prepare_run`` and the cache;
- ``columns``: the run's columns (hedge legs, collateral) and each one's margin mode and
  leverage, checked against what the venue's model allows;
- ``versions``: the venue's rules over the run's bars, as the kernel takes them;
- ``targets``: a strategy's targets aligned to the run's columns;
- ``suspicious``: legal but suspicious data (funding beyond the venue's cap, a mark far
  from the last price), recorded as the run's warnings.
"""

from .columns import Layout, check_model_modes
from .run import PrepareCache, PreparedRun, prepare_run, split_plan
from .targets import targets_array
from .versions import default_symbol_rules, pack_tiers, rule_versions, venue_funding, version_bars

__all__ = ["Layout", "PrepareCache", "PreparedRun", "check_model_modes", "default_symbol_rules",
           "pack_tiers", "prepare_run", "rule_versions", "split_plan", "targets_array",
           "venue_funding", "version_bars"]
