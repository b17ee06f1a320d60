"""``run.py bench``: the benchmark suite of benchmarks/, printed as one table."""

from __future__ import annotations

import argparse
import importlib
import time

SUITE = {
    "compile": "benchmarks.compile",
    "creates": "benchmarks.creates",
    "list": "benchmarks.listpage",
    "web": "benchmarks.web",
    "rules": "benchmarks.rules",
    "sla": "benchmarks.sla",
    "dashboards": "benchmarks.dashboards",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", default="", help="comma-separated benchmarks to run: " + ", ".join(SUITE))
    parser.add_argument("--rows", type=int, default=1_000_000, help="records for the list and web benchmarks (default: %(default)s)")
    parser.add_argument("--clocks", type=int, default=1_000_000, help="running SLA clocks for the sla benchmark (default: %(default)s)")
    parser.add_argument("--creates", type=int, default=3000, help="creates to time per database (default: %(default)s)")
    parser.add_argument("--pg", default=None, help="PostgreSQL URL (default: KILN_BENCH_PG, KILN_TEST_PG or the local server; 'none' to skip)")
    parser.add_argument("--no-list-pg", action="store_true", help="run the list benchmark on SQLite only")


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SUITE)}")
        return 2
    options = {"rows": args.rows, "creates": args.creates, "pg": args.pg, "list_pg": not args.no_list_pg, "sla_clocks": args.clocks}
    for name in names:
        start = time.perf_counter()
        module = importlib.import_module(SUITE[name])
        for result in module.run(options):
            print(result.line(), flush=True)
        print(f"  ({name} took {time.perf_counter() - start:.1f} s)", flush=True)
    return 0
