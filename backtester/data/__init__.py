"""Market data: load, check and align OHLC / mark-price / funding parquet files.

``load_market()`` reads a directory in the layout ``SYM-tf.parquet``,
``SYM_mark-tf.parquet``, ``SYM_funding.parquet`` (default: the embedded
dataset) into a :class:`Market` of aligned ``(T, N)`` arrays.
"""

from .csv_import import import_csv
from .loader import embedded_data_dir, load_market
from .market import Market
from .synthetic import generate_embedded, make_market, write_market
from .validate import DataError, DataWarning

__all__ = [
    "DataError",
    "DataWarning",
    "Market",
    "embedded_data_dir",
    "generate_embedded",
    "import_csv",
    "load_market",
    "make_market",
    "write_market",
]
