"""``python -m broker_client pub|sub ...``."""

import sys

from ._cli import main

sys.exit(main(sys.argv[1:]))
