"""The `llmgateway` command's entry point, and `python -m llmgateway`'s.

`serve` must handle SIGTERM, SIGINT and SIGHUP from its first moments (see
`llmgateway.process.stop_signals`): before the command line is parsed and the CLI's
modules are imported, the stop and reload signals of a `serve` process are captured.
"""

from __future__ import annotations

import sys


def run() -> None:
    """Capture the stop and reload signals when serving, then run the click CLI."""
    if sys.argv[1:2] == ["serve"]:
        from llmgateway.process.stop_signals import process_reload_signals, process_stop_signals

        process_stop_signals()
        process_reload_signals()
    from llmgateway.cli.main import main

    main(prog_name="llmgateway")
