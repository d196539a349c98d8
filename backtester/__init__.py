"""backtester: leveraged, margined portfolio backtests with cross and isolated margin."""

__version__ = "0.1.0"
