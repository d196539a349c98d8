"""The margin models, one line each: a venue file's ``model`` names one of them.

A new model is a module holding a ``MarginModel`` subclass and its instance (see
``binance.py``), and a line here.
"""

from __future__ import annotations

from collections.abc import Callable

from .binance import BINANCE
from .bybit import BYBIT_UTA
from .kraken import KRAKEN_SPOT
from .models import MarginModel
from .okx import OKX
from .spec import VenueSpecError

MODELS: dict[str, MarginModel] = {m.name: m for m in (BINANCE, BYBIT_UTA, OKX, KRAKEN_SPOT)}


def margin_model(name: str) -> MarginModel:
    """The model called ``name``; ``VenueSpecError`` naming the models otherwise.

    Example:
        >>> margin_model("kraken_spot").margin_modes
        ('cross',)
    """
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise VenueSpecError(f"model must be one of {', '.join(MODELS)}, got {name!r}") from None


def models_where(test: Callable[[MarginModel], bool]) -> str:
    """The names of the models that pass ``test``, for messages: ``"the binance model"``.

    Example:
        >>> models_where(lambda m: m.collateral)
        'the binance, bybit_uta and okx models'
    """
    names = [m.name for m in MODELS.values() if test(m)]
    if not names:
        return "no model"
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"the {listed} model{'s' if len(names) > 1 else ''}"
