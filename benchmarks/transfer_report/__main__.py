import sys

from benchmarks.transfer_report.cli import main

sys.exit(main())
