"""`python -m data.convert SRC out=DST ...`: see data/convert/cli.py."""

import sys

from data.convert.cli import main

sys.exit(main())
