"""Rebuild the embedded dataset in this folder: ``python data/generate.py``.

Writes the perpetuals (``generate_embedded``) and then the spot series derived
from them (``generate_spot.py``, in ``spot/``), so the two never drift apart.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from generate_spot import generate_spot  # noqa: E402

from backtester.data.synthetic import generate_embedded  # noqa: E402

generate_embedded(HERE)
generate_spot(HERE)
