"""Example strategies to copy from. Each is a function of a Market (and parameters)
that returns target positions, ready for ``backtester.run``."""

from .hedged_pair import hedged_pair

__all__ = ["hedged_pair"]
