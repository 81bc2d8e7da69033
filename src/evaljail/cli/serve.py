"""``evaljail serve``: the executor HTTP service on uvicorn (default ``127.0.0.1:9999``).

Start-up order: read the settings (an invalid variable stops here, exit 2, naming it); refuse a
non-loopback address without ``EVALJAIL_API_TOKEN`` (exit 2); start the jailed pool and wait
until it is warm (a host that cannot confine code stops here, exit 1); only then bind the port,
so ``/health`` answers ``ok`` from its first request. SIGINT/SIGTERM stop accepting, answer
``503`` to uploads still arriving, drain the requests in flight, then stop the pool: no process
is left behind. uvicorn runs :mod:`evaljail.service.protocol` (h11 with read and send deadlines).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from typing import Annotated

import typer

__all__ = ["register", "serve"]


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"evaljail serve: {message}\n")
    sys.stderr.flush()
    return code


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the service until it is told to stop; returns the process exit code."""
    from ..errors import ConfigurationError, EvaljailError
    from ..settings import ENV_VARS, Settings

    try:
        settings = Settings.from_env(environ)
        overrides: dict[str, object] = {}
        if host is not None:
            try:
                overrides["host"] = ENV_VARS["EVALJAIL_HOST"][1](host)
            except ValueError as exc:
                raise ConfigurationError(f"invalid --host: {exc}") from None
        if port is not None:
            if not 0 <= port <= 65535:
                raise ConfigurationError(f"invalid --port: must be between 0 and 65535, got {port}")
            overrides["port"] = port
        if overrides:
            settings = settings.with_overrides(**overrides)
        from ..service import check_bind_security

        check_bind_security(settings)
    except ConfigurationError as exc:
        return _fail(exc.message, 2)

    import logging

    import uvicorn

    from ..runner import PythonRunner
    from ..service import create_app, wait_until_warm
    from ..service.logs import configure_logging
    from ..service.protocol import http_protocol

    configure_logging(log_level)
    log = logging.getLogger("evaljail.service")
    try:
        runner = PythonRunner(settings=settings, backend="local")
    except EvaljailError as exc:
        return _fail(f"cannot start the jailed pool: {exc.message}", 1)
    try:
        if not wait_until_warm(runner, timeout_s=120.0):
            log.warning("pool not fully warm after 120 s; serving anyway")
        app = create_app(settings, runner=runner)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            server_header=False,
            ws="none",
            # h11 with a head read deadline, a send deadline and JSON parser errors
            http=http_protocol(
                read_timeout_s=settings.read_timeout_ms / 1000,
                send_timeout_s=settings.send_timeout_ms / 1000,
            ),
            backlog=2048,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=int(settings.max_timeout_ms / 1000) + 10,
        )
        server = uvicorn.Server(config)
        log.info(
            "serving",
            extra={
                "host": settings.host,
                "port": settings.port,
                "isolation": settings.isolation,
                "pool_min_size": settings.pool_min_size,
                "pool_max_size": settings.pool_max_size,
                "auth": settings.api_token is not None,
            },
        )
        # uvicorn re-raises the signal that stopped it once it has shut down; catch it here so
        # that the pool below is closed (and the exit code is 0) instead of dying half-way.
        received: list[int] = []
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, lambda n, _f: received.append(n)) for sig in handled}
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot bind or start
            if exc.code not in (0, None):
                return _fail(
                    f"could not serve on {settings.host}:{settings.port} (the log above says "
                    "why; is the port taken?)",
                    1,
                )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("shut down", extra={"signal": received[0] if received else None})
        return 0 if server.started else 1
    finally:
        runner.close()


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def _cmd(
        host: Annotated[
            str | None,
            typer.Option(help="Address to listen on [default: EVALJAIL_HOST or 127.0.0.1]."),
        ] = None,
        port: Annotated[
            int | None, typer.Option(help="Port [default: EVALJAIL_PORT or 9999].")
        ] = None,
        log_level: Annotated[
            str, typer.Option(help="debug, info, warning or error (JSON lines on stderr).")
        ] = "info",
    ) -> None:
        """Run the executor HTTP service (iofold-compatible; OpenAPI docs at /docs).

        Configuration comes from the environment (PYTHON_POOL_MIN_SIZE, EVALJAIL_PORT, ...);
        a non-loopback address requires EVALJAIL_API_TOKEN. Exit codes: 0 after a clean
        shutdown, 1 when the jail or the port is unavailable, 2 on invalid configuration.
        """
        raise typer.Exit(serve(host=host, port=port, log_level=log_level))
