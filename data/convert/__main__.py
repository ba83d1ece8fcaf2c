"""`python -m data.convert SRC out=DST ...`: see data/convert/cli.py."""

import sys

from envs.threads import prepare_process

prepare_process()  # before any converter loads torch: waiting threads sleep (envs/threads.py)

from data.convert.cli import main  # noqa: E402

sys.exit(main())
