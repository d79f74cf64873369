"""The results as a Markdown section: printed, kept in bench/results/, and put in README."""

from __future__ import annotations

import platform
from pathlib import Path

from bench import outbox
from bench.run import Results, Row

BEGIN = "<!-- bench:begin (written by python -m bench; edits inside are overwritten) -->"
END = "<!-- bench:end -->"


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor else "-"


def _row(row: Row, floor: Row) -> str:
    if row.latency is None or row.throughput is None:
        return f"| {row.name} | n/a | | n/a | | n/a | | | {row.note} |"
    assert floor.latency is not None
    assert floor.throughput is not None
    p50 = row.latency.percentile_ms(50)
    p99 = row.latency.percentile_ms(99)
    rps = row.throughput.per_second
    trips = "-" if row.round_trips is None else f"{row.round_trips:.2f}"
    return (
        f"| {row.name} | {p50:.2f} | {_ratio(p50, floor.latency.percentile_ms(50))} "
        f"| {p99:.2f} | {_ratio(p99, floor.latency.percentile_ms(99))} "
        f"| {rps:,.0f} | {_ratio(rps, floor.throughput.per_second)} "
        f"| {row.throughput.percentile_ms(50):.1f} / {row.throughput.percentile_ms(99):.1f} "
        f"| {trips} | {row.note} |"
    )


def render(results: Results) -> str:
    """The whole section: machine, table, growth and memory, with the targets beside them."""
    options = results.options
    floor = results.rows[0]
    c = options.concurrency
    lines = [
        f"Measured {results.started:%Y-%m-%d %H:%M} UTC on {results.cores} cores "
        f"({platform.processor() or platform.machine()}, {platform.system()}), PostgreSQL "
        f"{results.postgres_version}, Python {platform.python_version()}; service and database "
        "on the same machine, the load generator in a process of its own "
        f"(run took {results.seconds / 60:.1f} min). Data: 51 clinics, "
        f"{options.scale.clinic_appointments:,} appointments of the measured clinic (5 staff), "
        f"{options.scale.other_appointments:,} of the others, and "
        f"{options.scale.past_calls:,} past calls ({options.scale.past_voicemails:,} with a "
        "voicemail), loaded in "
        f"{results.load_seconds:.1f} s.",
        "",
        f"Latency: {options.requests:,} sequential requests on one keep-alive connection. "
        f"Throughput: {options.concurrent_requests:,} requests over {c} connections. "
        "Round trips: counted at the wire (client Sync and Query messages) by a proxy in "
        "front of PostgreSQL.",
        "",
        f"| request | p50 ms | x floor | p99 ms | x floor | req/s c={c} | x floor "
        f"| p50 / p99 ms c={c} | round trips | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *(_row(row, floor) for row in results.rows),
        "",
    ]
    if results.growth:
        sizes = sorted({rows for rows, _, _ in results.growth})
        lines += [
            "check_availability p50 (ms) by table size and window: days computed (dates and "
            "durations not asked before), and days remembered "
            "(schema/definitions/04_availability_cache.sql):",
            "",
            "| appointments in the table | 1 day | 7 days | 31 days | 31 d / 1 d "
            "| 7 days, remembered |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        by = {(rows, label): p50 for rows, label, p50 in results.growth}
        for rows in sizes:
            one, seven, month, kept = (
                by.get((rows, label), 0) for label in ("1d", "7d", "31d", "7d remembered")
            )
            lines.append(
                f"| {rows:,} | {one:.2f} | {seven:.2f} | {month:.2f} | {_ratio(month, one)} "
                f"| {kept:.2f} |"
            )
        if len(sizes) > 1:
            small, big = sizes[0], sizes[-1]
            labels = ("1d", "7d", "31d", "7d remembered")
            lines += [
                "",
                "Growth from {:,} to {:,} rows (p50): computed 1 day {}, 7 days {}, 31 days {}; "
                "remembered 7 days {}.".format(
                    small,
                    big,
                    *(_ratio(by.get((big, d), 0), by.get((small, d), 0)) for d in labels),
                ),
            ]
        lines.append("")
    if results.rss_before:
        change = (results.rss_after - results.rss_before) / results.rss_before * 100
        lines.append(
            f"Memory: the service's resident size went from {results.rss_before / 2**20:.1f} MiB "
            f"to {results.rss_after / 2**20:.1f} MiB ({change:+.1f}%) over "
            f"{options.memory_requests:,} requests (readyz alternating with check_availability, "
            "leave_voicemail and forward_call)."
        )
        lines.append("")
    lines += outbox.render(results.outbox)
    return "\n".join(lines)


def write_readme(readme: Path, section: str) -> None:
    """Put `section` between the markers under "## Performance", adding the heading if needed."""
    text = readme.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        if "## Performance" not in text:
            text = text.rstrip() + "\n\n## Performance\n\n"
        head, _, tail = text.partition("## Performance")
        intro, sep, after = tail.partition("\n## ")
        text = head + "## Performance" + intro.rstrip() + "\n\n" + block + "\n" + sep + after
    readme.write_text(text, encoding="utf-8")
