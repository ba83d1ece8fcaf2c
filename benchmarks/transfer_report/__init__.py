"""The transfer study's report (docs/pretrain-finetune.md): success per (task, demos, arm) pooled over seeds,
paired McNemar tests against training from scratch, final validation losses; a table and a plot.

    python -m benchmarks.transfer_report outputs/transfer_libero --save benchmarks/results/transfer/NAME.json
    python -m benchmarks.transfer_report benchmarks/results/transfer/NAME.json --markdown --plot PNG

runs.py reads the run directories, summary.py computes the numbers, render.py draws them, cli.py is the command.
"""

from benchmarks.transfer_report.cli import main

__all__ = ["main"]
