"""The command line: migrate, serve (optionally with the demo clinic)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import structlog

from service.config import Settings
from service.logs import configure_logging

log = structlog.get_logger("service")


def _migrate(settings: Settings) -> int:
    from service.db import database_url
    from service.migrate import migrate

    with database_url(settings) as url:
        asyncio.run(migrate(url))
    return 0


def _serve(settings: Settings, *, demo: bool) -> int:
    import uvicorn
    from pydantic import SecretStr

    from service.app import create_app
    from service.db import database_url
    from service.demo import DEMO_AGENT_ID, demo_api_key, load_demo
    from service.migrate import migrate

    if settings.retell_api_key is None and not demo:
        log.error(
            "retell_api_key_missing",
            hint="set RETELL_API_KEY (the Retell key with the webhook badge), or use --demo",
        )
        return 2
    with database_url(settings) as url:
        embedded = settings.database_url is None
        if embedded or demo:
            asyncio.run(migrate(url))
        updates: dict[str, object] = {"database_url": url}
        if demo:
            asyncio.run(load_demo(url))
            if settings.retell_api_key is None:
                updates["retell_api_key"] = SecretStr(demo_api_key(settings.data_dir))
        settings = settings.model_copy(update=updates)
        if demo:
            _print_demo_help(settings, DEMO_AGENT_ID)
        app = create_app(settings)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            loop="uvloop",
            http="httptools",
            timeout_graceful_shutdown=8,
            server_header=False,
        )
        # uvicorn re-raises SIGINT/SIGTERM once it has shut down; turning that into SystemExit
        # lets the `with` above stop the embedded database before the process ends.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _exit_on_signal)
        uvicorn.Server(config).run()
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _print_demo_help(settings: Settings, agent_id: str) -> None:
    key_file = settings.data_dir / "demo_retell_api_key"
    base = f"http://{settings.host}:{settings.port}"
    print(
        f"""
Demo clinic loaded: Brightside Dental (America/New_York), agent_id {agent_id}
Signing key: kept in {key_file} (use it as RETELL_API_KEY when signing requests)

Try it:
  python -m service call check_availability --agent-id {agent_id} --base-url {base} \\
      --key-file {key_file} date=$(date -d '+7 days' +%F) time_preference=morning
  curl -s {base}/readyz
""",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending schema/ migrations to DATABASE_URL")
    serve = commands.add_parser("serve", help="serve HTTP on HOST:PORT")
    serve.add_argument("--demo", action="store_true", help="load the demo clinic first")
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", type=int, help="overrides PORT")
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "serve":
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        return _serve(settings.model_copy(update=overrides), demo=args.demo)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
