"""The durable spool's cost through the client, against the same client without it and against 2.4.0.

    python bench/spool_client_bench.py             # about 2 minutes on 2 cores
    python bench/spool_client_bench.py --quick     # smaller N, 2 repetitions (about 1 minute)

It reuses ``bench/run.py``'s machinery (the reference's ``.bench-venv``, the sink in its own
process, the SDK pinned on one core and the sink on the other, the variants' order rotating
each repetition) and ``bench/workloads.py``'s workloads, run three ways: the reference
2.4.0, this library memory-only (``ours``) and this library with ``storage=`` under the
system's temporary directory (``ours_spool``), both with the standard library's json.
Then, with the spool only: disk bytes per spooled event (``spool_disk``) and the time to
deliver a backlog an earlier process left in the spool (``backlog``).

Goals (ratios computed per repetition, the median judged):

* caller CPU per ``track()`` with the spool at most 1.5x without it;
* delivered events/s with the spool at least 2x 2.4.0's memory-only figure;
* disk bytes per spooled event at most 1.5x its JSON.

Results go to ``bench/results/spool_client.json`` and to bench/README.md between the
``spool-client:start`` / ``spool-client:end`` markers (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench/run.py

RESULTS = run.BENCH / "results" / "spool_client.json"
START_MARK = "<!-- spool-client:start -->"
END_MARK = "<!-- spool-client:end -->"
FULL = {"caller": 20_000, "throughput": 100_000, "spool_disk": 100_000, "backlog": 100_000}
QUICK = {"caller": 5_000, "throughput": 20_000, "spool_disk": 20_000, "backlog": 20_000}


def _median(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _paired(runs: dict[str, list[dict[str, Any]]], field: str, num: str, den: str) -> Optional[dict[str, float]]:
    """``num / den`` for each repetition both ran (seconds apart), summarised."""
    by_rep = {r["rep"]: r[field] for r in runs.get(den, [])}
    ratios = [r[field] / by_rep[r["rep"]] for r in runs.get(num, []) if by_rep.get(r["rep"])]
    return _median(ratios) if ratios else None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every workload; returns the raw runs and the notes."""
    sizes = dict(QUICK if args.quick else FULL)
    reps = args.reps or (2 if args.quick else 5)
    ref_python = run.ensure_reference_venv()
    variants, notes = run.make_variants(ref_python, run.ROOT, sys.executable)
    chosen = [v for v in variants if v.name in ("ref", "ours", "ours_spool")]
    spool = next(v for v in chosen if v.name == "ours_spool")
    modes, pin_notes = run.placements(["pinned"])
    notes += pin_notes
    placement = modes[0] if modes else run.placements(["unpinned"])[0][0]
    sink = run.SinkProcess(placement.sink)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for rep in range(reps):
            order = chosen[rep % len(chosen) :] + chosen[: rep % len(chosen)]
            for workload in ("caller", "throughput"):
                for variant in order:
                    result = run.run_workload(variant, placement, workload, sink.port, sizes[workload])
                    result["rep"] = rep
                    runs.setdefault(workload, {}).setdefault(variant.name, []).append(result)
                    run.log(f"rep {rep + 1}/{reps} {workload:<10} {variant.name}")
        for rep in range(args.spool_reps or (1 if args.quick else 3)):
            for workload in ("spool_disk", "backlog"):
                result = run.run_workload(spool, placement, workload, sink.port, sizes[workload])
                result["rep"] = rep
                runs.setdefault(workload, {}).setdefault(spool.name, []).append(result)
                run.log(f"rep {rep + 1} {workload:<10} {spool.name}")
    finally:
        sink.stop()
    return {
        "meta": {
            "date": _dt.date.today().isoformat(),
            "command": "python bench/spool_client_bench.py" + (" --quick" if args.quick else ""),
            "machine": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "commit": run.git_state(run.ROOT),
            "sizes": sizes,
            "reps": reps,
            "placement": placement.description,
            "notes": notes,
        },
        "runs": runs,
    }


def summarize(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: medians per variant, the ratio that has a goal, and whether it is met."""
    runs = report["runs"]
    rows: list[dict[str, Any]] = []

    def row(label: str, unit: str, workload: str, field: str, fmt: str, ratio: Any = None, goal: str = "") -> None:
        cells = {
            name: _median([r[field] for r in results])
            for name, results in runs.get(workload, {}).items()
            if results and field in results[0]
        }
        entry: dict[str, Any] = {"label": label, "unit": unit, "fmt": fmt, "variants": cells}
        if ratio is not None:
            entry["ratio"] = ratio
            if ratio is not None and goal:
                op, _, bound = goal.partition(":")
                entry["goal"] = goal
                entry["met"] = ratio["median"] <= float(bound) if op == "le" else ratio["median"] >= float(bound)
        rows.append(entry)

    caller, tput = runs.get("caller", {}), runs.get("throughput", {})
    row(
        "caller CPU per track()",
        "µs",
        "caller",
        "caller_cpu_us",
        "{:.2f}",
        _paired(caller, "caller_cpu_us", "ours_spool", "ours"),
        "le:1.5",
    )
    row("caller wall time per track()", "µs", "caller", "caller_wall_us", "{:.2f}")
    row(
        "delivered events/s, 1st track() to flush()",
        "events/s",
        "throughput",
        "events_per_s",
        "{:,.0f}",
        _paired(tput, "events_per_s", "ours_spool", "ref"),
        "ge:2",
    )
    row("CPU (user+sys) per 100k delivered", "s", "throughput", "cpu_s_per_100k", "{:.2f}")
    row("peak RSS, throughput run", "MB", "throughput", "peak_rss_mb", "{:.1f}")
    disk = runs.get("spool_disk", {}).get("ours_spool", [])
    row("JSON bytes per event", "B", "spool_disk", "json_bytes_per_event", "{:.1f}")
    row(
        "disk bytes per spooled event",
        "B",
        "spool_disk",
        "disk_bytes_per_event",
        "{:.1f}",
        _median([r["disk_ratio"] for r in disk]) if disk else None,
        "le:1.5",
    )
    row("backlog delivered after a restart", "s", "backlog", "backlog_seconds", "{:.2f}")
    row("backlog delivery rate", "events/s", "backlog", "backlog_events_per_s", "{:,.0f}")
    return rows


def render(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The Markdown section: the table, how the ratios are taken, the notes."""
    meta = report["meta"]
    names = [("ref", "reference 2.4.0"), ("ours", "ours, memory only"), ("ours_spool", "ours + spool")]
    lines = [
        f"Results of **{meta['date']}**, `{meta['command']}` on commit `{meta.get('commit') or '?'}`: "
        f"{meta['machine']}, Python {meta['python']}, {meta['cpus']} CPUs, {meta['placement']}, "
        f"{meta['reps']} repetitions of caller/throughput, sizes {meta['sizes']}. Standard-library json everywhere.",
        "",
        "| figure | unit | " + " | ".join(label for _, label in names) + " | ratio [min-max] (goal) |",
        "|---|---|---|---|---|---|",
    ]
    for entry in rows:
        fmt = entry["fmt"]
        cells = []
        for name, _ in names:
            st = entry["variants"].get(name)
            cells.append(f"{fmt.format(st['median'])} ({fmt.format(st['min'])}-{fmt.format(st['max'])})" if st else "—")
        ratio_text = ""
        ratio = entry.get("ratio")
        if ratio:
            shown = run._ratio_text(ratio["median"], entry.get("goal"))
            ratio_text = f"{shown} [{ratio['min']:.2f}-{ratio['max']:.2f}]"
            if entry.get("goal"):
                op, _, bound = entry["goal"].partition(":")
                ratio_text += f" ({'≤' if op == 'le' else '≥'} {bound}x {'✅' if entry['met'] else '❌'})"
        lines.append(f"| {entry['label']} | {entry['unit']} | " + " | ".join(cells) + f" | {ratio_text} |")
    lines += [
        "",
        "Ratios, each computed per repetition and then the median taken: caller CPU, ours + spool / ours memory "
        "only; delivered events/s, ours + spool / reference; disk bytes, spool / the events' JSON.",
    ]
    for note in meta["notes"]:
        lines += ["", f"> {note}"]
    return "\n".join(lines) + "\n"


def update_readme(section: str) -> None:
    """Replace the text between this script's markers in bench/README.md."""
    text = run.README.read_text(encoding="utf-8")
    block = f"{START_MARK}\n{section}{END_MARK}"
    if START_MARK in text and END_MARK in text:
        before, _, rest = text.partition(START_MARK)
        _, _, after = rest.partition(END_MARK)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    run.README.write_text(text, encoding="utf-8")


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller N, 2 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of caller and throughput (default 5)")
    parser.add_argument("--spool-reps", type=int, default=None, help="repetitions of spool_disk and backlog (3)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = measure(args)
    report["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    rows = summarize(report)
    report["rows"] = rows
    section = render(report, rows)
    print(section)
    print(f"(total {report['meta']['seconds']:.0f}s)")
    if not args.no_write:
        RESULTS.write_text(json.dumps(report, indent=1))
        update_readme(section)
        run.log(f"wrote {RESULTS.relative_to(run.ROOT)} and the spool-client section of bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
