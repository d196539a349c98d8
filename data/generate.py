"""Rebuild the embedded dataset in this folder: ``python data/generate.py``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backtester.data.synthetic import generate_embedded  # noqa: E402

generate_embedded(Path(__file__).resolve().parent)
