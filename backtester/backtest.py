"""``run()``: one backtest, through the one path (``prepare.prepare_run``) to the kernel."""

from __future__ import annotations

import dataclasses
from functools import partial

from ._compile_progress import shows_first_compile
from .config import RunConfig
from .data.market import Market
from .engine.driver import CallbackError, KernelOutput, Pause, execute
from .prepare import PreparedRun, prepare_run, split_plan
from .result import Result
from .spans import data_end_notes, late_start_notes, warn_all
from .strategy import StrategyError, explain_runtime_error


@shows_first_compile("run")
def run(market: Market, targets, config: RunConfig | None = None, **options) -> Result:
    """Backtest a strategy on ``market`` under the margin rules of a venue.

    ``targets`` is what the strategy decides, in one of three forms:

    - target positions per bar and symbol, decided at each bar's close (a (T, N)
      array or a DataFrame; NaN = leave the position as it is), in the unit
      ``config.target_kind``;
    - a ``backtester.strategy.Callback``: a compiled function called at each
      close with the account's state, writing the orders for the next bar;
    - a ``backtester.strategy.Plan`` (what the strategies of ``strategies/``
      build): targets or a Callback, with the run options it assumes (keyword
      options given here win over them).

    Keyword options override fields of ``config`` (``RunConfig`` documents them).

    Example:
        >>> from backtester import load_market, run
        >>> market = load_market()                       # the embedded data
        >>> import numpy as np
        >>> targets = np.full((market.n_bars, market.n_symbols), np.nan)
        >>> targets[0] = [0.5, -0.5]                     # 50% of equity long BTC, short ETH
        >>> result = run(market, targets, target_kind="equity", margin_mode="cross", leverage=5)
        >>> result.summary()["liquidations"]
        0
    """
    orders, plan_options = split_plan(targets)
    config = (config or RunConfig()).replace(**{**plan_options, **options})
    return run_prepared(prepare_run(market, orders, config))


def execute_prepared(prepared: PreparedRun, pause: Pause | None = None) -> KernelOutput:
    """Run a prepared run through the kernel (``pause``: stop after one bar to act on the
    account, ``driver.execute``); an error raised inside a strategy callback is a
    ``StrategyError`` that names its bar, its time and its line."""
    try:
        return execute(prepared.inputs, pause)
    except CallbackError as exc:
        cause = exc.__cause__ or exc
        market = prepared.market
        when = market.timestamps[exc.bar] if 0 <= exc.bar < market.n_bars else "?"
        raise StrategyError(explain_runtime_error(prepared.callback, exc.bar, str(when),
                                                  cause)) from cause


def run_prepared(prepared: PreparedRun, pause: Pause | None = None) -> Result:
    """Run a prepared run and wrap what the kernel produced in a ``Result``.

    A run that does not record positions and liquidation prices (``record_positions``)
    gets the means to replay itself with the record on, which its Result calls when its
    ``liquidation_prices`` are first asked for (a run with a ``pause``, which acts on the
    account from Python, is not replayed: it has none)."""
    output = execute_prepared(prepared, pause)
    rerun = None
    if not prepared.inputs.record_positions and pause is None:
        rerun = partial(_recorded_output, prepared)
    notes = [*late_start_notes(prepared.market, output.rejections),
             *data_end_notes(prepared.market, output.fills, output.rejections)]
    warn_all(notes)
    return Result(market=prepared.market, config=prepared.config, venue=prepared.venue,
                  output=output, margin_mode=prepared.margin_mode, leverage=prepared.leverage,
                  specs=prepared.specs, initial_equity=output.initial_equity,
                  warnings=(*prepared.warnings, *notes), rerun=rerun)


def _recorded_output(prepared: PreparedRun) -> KernelOutput:
    """What the kernel produces for ``prepared`` replayed for its liquidation prices: those,
    and of the rest only what the replay is checked by (``KernelInputs.replay_for_prices``)."""
    inputs = dataclasses.replace(prepared.inputs, replay_for_prices=True)
    return execute_prepared(dataclasses.replace(prepared, inputs=inputs))
