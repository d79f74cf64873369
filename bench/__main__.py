"""python -m bench [--quick]: measure the service against its floor and write the results."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace

from bench import data, report
from bench.run import RESULTS, ROOT, Options, Results, main
from service.logs import configure_logging

QUICK = Options(
    requests=200,
    concurrent_requests=400,
    warmup=30,
    round_trip_calls=20,
    memory_requests=5_000,
    scale=data.Scale(other_appointments=20_000),
    small_table=10_000,
    big_table=100_000,
    delivery_bookings=100,
)


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a CI-sized run (about a minute)")
    parser.add_argument("--port", type=int, help="first of three ports to use (default 18200)")
    parser.add_argument("--requests", type=int, help="sequential requests per latency figure")
    parser.add_argument("--memory-requests", type=int, help="requests between the RSS readings")
    parser.add_argument(
        "--no-readme", action="store_true", help="leave README.md alone (quick runs never write it)"
    )
    parser.add_argument("--keep-database", action="store_true", help="keep bench_<pid> afterwards")
    args = parser.parse_args(argv)

    # The bench's own progress goes to stderr; the service's migrations need not chatter.
    configure_logging("WARNING", "console")
    options = QUICK if args.quick else Options()
    updates = {
        "port": args.port,
        "requests": args.requests,
        "memory_requests": args.memory_requests,
        "keep_database": args.keep_database or None,
    }
    options = replace(options, **{k: v for k, v in updates.items() if v is not None})

    results = _run(options)
    section = report.render(results)
    print(section)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(section, encoding="utf-8")
    if not args.quick and not args.no_readme:
        report.write_readme(ROOT / "README.md", section)
    return 0


def _run(options: Options) -> Results:
    """On uvloop when it is installed (it is, with uvicorn[standard]): a leaner client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main(options))
    results: Results = uvloop.run(main(options))
    return results


if __name__ == "__main__":
    sys.exit(cli())
