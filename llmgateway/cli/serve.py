"""`llmgateway serve`: the gateway and the keeper, in one process or in N workers."""

from __future__ import annotations

import click

from llmgateway.cli.common import CONFIG_HELP, config_error_exit, load_or_exit, resolve
from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.errors import ConfigError
from llmgateway.process.stop_signals import process_reload_signals, process_stop_signals


@click.command()
@click.option("--config", "config_option", metavar="PATH", help=CONFIG_HELP)
@click.option("--host", default=None, help="Listen address (overrides server.host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Listen port.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option("--worker-index", type=click.IntRange(min=0), default=None, hidden=True)
@click.option("--supervisor-pid", type=click.IntRange(min=1), default=None, hidden=True)
def serve(
    config_option: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    worker_index: int | None = None,
    supervisor_pid: int | None = None,
) -> None:
    """Run the gateway and the key keeper (in N processes sharing the port with --workers N)."""
    # From here on (from the start of the process when launched as `llmgateway serve`) a
    # SIGTERM or SIGINT stops the server gracefully, whatever it is doing; a SIGHUP
    # never ends it (it reloads the configuration once the application serves).
    signals = process_stop_signals()
    reloads = process_reload_signals()
    config_path = resolve(config_option)
    try:
        accessor = ConfigAccessor(load_or_exit(config_path))
    except SystemExit:  # nothing started: the signals are handled as they were before
        signals.release()
        reloads.release()
        raise
    # Imported here: the server pulls in uvloop and the whole application, which the
    # other commands do not need.
    from llmgateway.process.server import run_server

    try:
        run_server(
            config_path,
            host,
            port,
            accessor=accessor,
            signals=signals,
            reloads=reloads,
            workers=workers,
            worker_index=worker_index,
            supervisor_pid=supervisor_pid,
        )
    except ConfigError as exc:
        raise config_error_exit(exc) from None
