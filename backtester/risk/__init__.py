"""Risk of a strategy beyond its one history: resampled markets and the probability of
liquidation (``bootstrap``, ``montecarlo``)."""

from .bootstrap import Bootstrap, Paths, optimal_block_length, path_seed
from .montecarlo import Configuration, LiquidationRisk, liquidation_risk

__all__ = [
    "Bootstrap",
    "Configuration",
    "LiquidationRisk",
    "Paths",
    "liquidation_risk",
    "optimal_block_length",
    "path_seed",
]
