"""``python -m backtester``: the command line, as ``backtester``."""

import sys

from .cli import main

sys.exit(main())
