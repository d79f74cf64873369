"""The command line: migrate, serve (optionally with the demo clinic), worker, tools, call."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog

from service.config import ConfigurationError, Settings, load_settings, secret_value
from service.logs import configure_logging

log = structlog.get_logger("service")

EXIT_DATABASE = 1
EXIT_CONFIGURATION = 2


def _with_database(
    url: str, work: Callable[..., Coroutine[Any, Any, object]], settings: Settings
) -> bool:
    """Run `work(url)`, connecting within CONNECT_TIMEOUT_SECONDS; a database that can't be
    reached or used is one line on stderr."""
    from service import db

    timeout = settings.connect_timeout_seconds
    try:
        asyncio.run(work(url, connect_timeout=timeout))
    except db.CONNECT_FAILURES as error:
        print(db.connect_problem(url, error, timeout), file=sys.stderr)
        return False
    return True


def _migrate_or_refuse(url: str, settings: Settings) -> bool:
    """Migrate; False (after one line saying why) when migrate refuses to."""
    from service.migrate import MigrationRefused, migrate

    try:
        return _with_database(url, migrate, settings)
    except MigrationRefused as refusal:
        log.error("migration_refused", reason=str(refusal))
        return False


def _migrate(settings: Settings) -> int:
    from service.db import database_url

    with database_url(settings) as url:
        return 0 if _migrate_or_refuse(url, settings) else EXIT_DATABASE


def _serve(settings: Settings, *, demo: bool, demo_into_database: bool) -> int:
    import uvicorn
    from pydantic import SecretStr

    from service.app import create_app
    from service.db import address_of, database_url
    from service.demo import DEMO_AGENT_ID, demo_api_key, load_demo

    if settings.retell_api_key is None and not demo:
        print(
            "RETELL_API_KEY is not set: serve needs the Retell API key with the webhook badge "
            "(or use serve --demo, which makes a local one).",
            file=sys.stderr,
        )
        return EXIT_CONFIGURATION
    if demo and settings.database_url is not None and not demo_into_database:
        print(
            "serve --demo would load the demo clinic into DATABASE_URL "
            f"({address_of(settings.database_url)}): unset DATABASE_URL to use the embedded "
            "database, or add --demo-into-database to load it there.",
            file=sys.stderr,
        )
        return EXIT_CONFIGURATION
    with database_url(settings) as url:
        embedded = settings.database_url is None
        if (embedded or demo) and not _migrate_or_refuse(url, settings):
            return EXIT_DATABASE
        updates: dict[str, object] = {"database_url": url}
        if demo:
            if not _with_database(url, load_demo, settings):
                return EXIT_DATABASE
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


def _worker(settings: Settings) -> int:
    from service.db import database_url
    from service.worker import run_worker

    problem = _channel_settings_problem(settings)
    if problem:
        log.error("worker_misconfigured", problem=problem)
        return 2
    _quiet_http_logs()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        with database_url(settings) as url:
            await run_worker(settings, url, stop)

    asyncio.run(run())
    return 0


def _channel_settings_problem(settings: Settings) -> str | None:
    """A channel configured halfway: say which variable is missing rather than fail each send."""
    longest = max(settings.notifications_webhook_timeout_seconds, settings.smtp_timeout_seconds)
    if settings.worker_lease_seconds <= longest:
        # Another worker would take a row over while its first attempt is still running.
        return (
            f"WORKER_LEASE_SECONDS ({settings.worker_lease_seconds:g}) must be longer than one "
            f"attempt (NOTIFICATIONS_WEBHOOK_TIMEOUT_SECONDS, SMTP_TIMEOUT_SECONDS: {longest:g})"
        )
    if settings.smtp_host and not settings.smtp_from:
        return "SMTP_HOST is set but SMTP_FROM (the sender address) is not"
    if settings.smtp_username and secret_value(settings.smtp_password) is None:
        return "SMTP_USERNAME is set but SMTP_PASSWORD is not"
    twilio = {
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
        "TWILIO_AUTH_TOKEN": secret_value(settings.twilio_auth_token),
        "TWILIO_FROM_NUMBER": settings.twilio_from_number,
    }
    missing = [name for name, value in twilio.items() if not value]
    if 0 < len(missing) < len(twilio):
        return f"SMS needs all three TWILIO_ settings; {', '.join(missing)} unset"
    return None


def _quiet_http_logs() -> None:
    # The operator commands print each request themselves; httpx's own line per request is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _tools(settings: Settings, args: argparse.Namespace) -> int:
    from service import cli_tools

    _quiet_http_logs()
    if args.base_url and not args.sync:
        malformed = cli_tools.malformed_base_url(args.base_url)
        if malformed:
            print(malformed, file=sys.stderr)
            return cli_tools.EXIT_USAGE
    if not args.sync:
        if not args.base_url:
            print(
                f"(URLs use {cli_tools.PLACEHOLDER_BASE_URL}; pass --base-url with the service's "
                "public URL)",
                file=sys.stderr,
            )
        return cli_tools.print_tools(args.base_url or cli_tools.PLACEHOLDER_BASE_URL, sys.stdout)
    if not args.llm_id or not args.base_url:
        print("tools --sync needs --llm-id and --base-url.", file=sys.stderr)
        return cli_tools.EXIT_USAGE
    if settings.retell_api_key is None:
        print("tools --sync needs RETELL_API_KEY (your Retell API key).", file=sys.stderr)
        return cli_tools.EXIT_USAGE
    problem = cli_tools.base_url_problem(args.base_url)
    if problem:
        print(problem, file=sys.stderr)
        return cli_tools.EXIT_USAGE

    async def run() -> int:
        assert settings.retell_api_key is not None
        async with cli_tools.retell_client(
            settings.retell_api_base_url,
            settings.retell_api_key.get_secret_value(),
            settings.http_timeout_seconds,
        ) as client:
            return await cli_tools.sync_tools(
                client, args.llm_id, args.base_url, apply=args.apply, out=sys.stdout, err=sys.stderr
            )

    return asyncio.run(run())


def _call(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from service import cli_call
    from service.cli_tools import malformed_base_url

    _quiet_http_logs()
    malformed = malformed_base_url(args.base_url)
    if malformed:
        print(malformed, file=sys.stderr)
        return cli_call.EXIT_USAGE
    if args.key_file:
        try:
            key = Path(args.key_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            print(f"can't read --key-file: {error.strerror}", file=sys.stderr)
            return cli_call.EXIT_USAGE
    elif settings.retell_api_key is not None:
        key = settings.retell_api_key.get_secret_value()
    else:
        print("call needs --key-file or RETELL_API_KEY to sign requests.", file=sys.stderr)
        return cli_call.EXIT_USAGE
    try:
        function_args = cli_call.parse_assignments(args.assignments)
    except cli_call.UsageError as error:
        print(error, file=sys.stderr)
        return cli_call.EXIT_USAGE
    identity = cli_call.CallIdentity(agent_id=args.agent_id)
    if args.call_id:
        identity.call_id = args.call_id
    if args.from_number is not None:
        identity.from_number = args.from_number or None
    if args.to_number is not None:
        identity.to_number = args.to_number or None

    async def run() -> int:
        async with cli_call.service_client(args.base_url, settings.http_timeout_seconds) as client:
            if args.function == "simulate":
                return await cli_call.simulate(
                    client,
                    key,
                    identity,
                    patient_name=args.patient_name,
                    out=sys.stdout,
                    err=sys.stderr,
                )
            return await cli_call.call_function(
                client, key, identity, args.function, function_args, out=sys.stdout, err=sys.stderr
            )

    return asyncio.run(run())


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def local_base_url(host: str, port: int) -> str:
    """The URL that reaches a server listening on `host`:`port` from this machine."""
    import ipaddress

    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"http://{host}:{port}"
    # Listening on every address: ask the loopback one.
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    text = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{text}:{port}"


def _print_demo_help(settings: Settings, agent_id: str) -> None:
    key_file = settings.data_dir / "demo_retell_api_key"
    base = local_base_url(settings.host, settings.port)
    # `./dev` says it started us: its own command works where no virtual environment is active.
    command = os.environ.get("SERVICE_COMMAND") or "python -m service"
    print(
        f"""
Demo clinic loaded: Brightside Dental (America/New_York), agent_id {agent_id}
Signing key: kept in {key_file} (use it as RETELL_API_KEY when signing requests)

Try it:
  {command} call check_availability --agent-id {agent_id} --base-url {base} \\
      --key-file {key_file} date=$(date -d '+7 days' +%F) time_preference=morning
  {command} call simulate --agent-id {agent_id} --base-url {base} --key-file {key_file}
  curl -s {base}/readyz
""",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending schema/ files to DATABASE_URL")
    serve = commands.add_parser("serve", help="serve HTTP on HOST:PORT")
    serve.add_argument("--demo", action="store_true", help="load the demo clinic first")
    serve.add_argument(
        "--demo-into-database",
        action="store_true",
        help="with --demo: load the demo clinic into DATABASE_URL too (else refused)",
    )
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", help="overrides PORT")
    commands.add_parser("worker", help="deliver notifications (the outbox) to the clinics")
    tools = commands.add_parser("tools", help="print (or sync) the Retell custom functions")
    tools.add_argument("--base-url", help="the service's public URL, e.g. https://clinic.example")
    tools.add_argument("--sync", action="store_true", help="update a Retell LLM's tools")
    tools.add_argument("--llm-id", help="the Retell LLM to update (with --sync)")
    tools.add_argument("--apply", action="store_true", help="write (default: dry run)")
    call = commands.add_parser(
        "call", help="send a signed function request, or `simulate` a whole call"
    )
    call.add_argument("function", help="a function name, or `simulate`")
    call.add_argument("assignments", nargs="*", help="arguments: key=value or key:=json")
    call.add_argument("--agent-id", required=True, help="the clinic's Retell agent id")
    call.add_argument("--base-url", default="http://127.0.0.1:8080", help="the running service")
    call.add_argument("--key-file", help="a file holding the signing key (else RETELL_API_KEY)")
    call.add_argument("--call-id", help="the call's id (default: a new one)")
    call.add_argument("--from-number", help="the caller's number ('' for a web call)")
    call.add_argument("--to-number", help="the clinic's number")
    call.add_argument("--patient-name", default="Sam Simulated", help="who books (simulate)")
    # Function arguments may come before or after the options: collect the loose key=value ones.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "call" or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.assignments = [*args.assignments, *extra]

    # The command line's values are checked like the environment's, and named as options.
    overrides = {"host": args.host, "port": args.port} if args.command == "serve" else {}
    try:
        settings = load_settings(overrides, option_names={"host": "--host", "port": "--port"})
    except ConfigurationError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        return EXIT_CONFIGURATION
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "serve":
        return _serve(settings, demo=args.demo, demo_into_database=args.demo_into_database)
    if args.command == "worker":
        return _worker(settings)
    if args.command == "tools":
        return _tools(settings, args)
    if args.command == "call":
        return _call(settings, args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
