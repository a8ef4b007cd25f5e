"""`groundwork serve`: web + worker (+ embedded parts) in the foreground, until Ctrl-C."""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys

from app.cli.common import CliError, log, running_parts
from app.infra.supervisor import Supervisor, install


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


class StopRequested(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: stop everything we started, then exit 0."""


def _request_stop(signum: int, frame: object) -> None:
    # Further signals are ignored so that a second Ctrl-C cannot cut the clean-up short.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise StopRequested(signal.Signals(signum).name)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.infra.worker_process import WorkerProcess
    from app.main import create_app
    from app.monitoring.files import forget_ended

    if not port_free(args.host, args.port):
        raise CliError(f"port {args.port} on {args.host} is already in use (try --port)")
    # uvicorn handles SIGINT/SIGTERM itself (a graceful stop) and then re-raises them to
    # these handlers, whose exception unwinds through the finally blocks below.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _request_stop)
    supervisor = Supervisor()
    try:
        with running_parts(llm=not args.no_llm, supervisor=supervisor) as settings:
            forget_ended(settings.metrics_path)  # a new start: the counters start again
            worker = None if args.no_worker else WorkerProcess(settings).start(wait=False)
            if worker is not None:
                supervisor.watch("worker", worker.alive, worker.restart)
            install(supervisor.start())
            try:
                config = uvicorn.Config(
                    create_app(settings),
                    host=args.host,
                    port=args.port,
                    log_level=settings.log_level.lower(),
                )
                print(f"Groundwork is serving http://{args.host}:{args.port}", file=sys.stderr)
                uvicorn.Server(config).run()
            finally:
                supervisor.stop()  # the children stop on purpose now
                if worker is not None:
                    worker.stop()
    except StopRequested as stop:
        log.info("stopped by %s", stop)
    return 0
