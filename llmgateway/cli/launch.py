"""The `llmgateway` command's entry point, and `python -m llmgateway`'s.

`serve` must handle SIGTERM and SIGINT from its first moments (see
`llmgateway.process.stop_signals`): before the command line is parsed and the CLI's
modules are imported, the stop signals of a `serve` process are captured.
"""

from __future__ import annotations

import sys


def run() -> None:
    """Capture the stop signals when serving, then run the click CLI."""
    if sys.argv[1:2] == ["serve"]:
        from llmgateway.process.stop_signals import process_stop_signals

        process_stop_signals()
    from llmgateway.cli.main import main

    main(prog_name="llmgateway")
