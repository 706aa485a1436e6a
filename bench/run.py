"""Benchmark orchestrator: this library against the reference segment-analytics-python==2.4.0.

It makes (or checks) the reference's own virtualenv in ``.bench-venv/``,
starts ``bench/sink.py`` in its own process, measures the sink's ceiling,
then runs every workload of ``bench/workloads.py`` as a separate subprocess
of the right interpreter (the reference venv's python, or ours), alternating
the order of the variants from one repetition to the next, and prints
medians, min-max and ratios against the reference. It does it twice: pinned
(the SDK's process on one core, the sink on another, with ``taskset``) and
unpinned.

Results go to ``bench/results/latest.json`` and the results section of
``bench/README.md`` (between the ``results:start`` / ``results:end`` markers).

    python bench/run.py            # full run (about 5-8 minutes on 2 cores)
    python bench/run.py --quick    # smaller N, fewer repetitions (about 1 minute)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
REF_VENV = ROOT / ".bench-venv"
REF_REQUIREMENT = "segment-analytics-python==2.4.0"
REF_VERSION = "2.4.0"
RESULTS = BENCH / "results" / "latest.json"
README = BENCH / "README.md"
START_MARK = "<!-- results:start -->"
END_MARK = "<!-- results:end -->"

FULL_SIZES = {"caller": 20_000, "throughput": 100_000, "memory": 10_000, "wire": 5_000, "backfill": 1_000_000}
QUICK_SIZES = {"caller": 5_000, "throughput": 20_000, "memory": 10_000, "wire": 2_000, "backfill": 100_000}
WORKLOAD_ORDER = ("caller", "throughput", "memory", "wire", "backfill")
#: Workloads too long to repeat as often as the others (``--backfill-reps``).
FEW_REPS = ("backfill",)


def git_state(path: Path) -> Optional[str]:
    """``<short commit>`` of the repository holding ``path``, ``+dirty`` when its ``segment/`` has changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--", "segment"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(message, file=sys.stderr, flush=True)


# -- interpreters ----------------------------------------------------------------------------------


@dataclass
class Variant:
    """One thing to measure: an interpreter, where its ``segment.analytics`` must come from, orjson on/off."""

    name: str
    label: str
    python: str
    env: dict[str, str]
    orjson: bool
    expect_file_under: Path
    expect_version: Optional[str] = None


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _probe(python: str, env: dict[str, str], code: str) -> Optional[str]:
    try:
        out = subprocess.run(
            [python, "-c", code],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


_VERSION_PROBE = "import segment.analytics.version as v, segment.analytics as a; print(v.VERSION, a.__file__)"


def ensure_reference_venv(recreate: bool = False) -> str:
    """Create or validate ``.bench-venv`` holding the reference release; returns its python."""
    python = REF_VENV / "bin" / "python"
    env = _clean_env()
    if not recreate and python.exists():
        found = _probe(str(python), env, _VERSION_PROBE)
        if found and found.split()[0] == REF_VERSION and str(REF_VENV) in found:
            return str(python)
        log(f"reference venv found but not usable ({found!r}): recreating it")
    if REF_VENV.exists():
        shutil.rmtree(REF_VENV)
    log(f"creating {REF_VENV} with {REF_REQUIREMENT} ...")
    subprocess.run([sys.executable, "-m", "venv", str(REF_VENV)], check=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", REF_REQUIREMENT],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"pip could not install {REF_REQUIREMENT}:\n{(done.stdout + done.stderr)[-3000:]}")
    found = _probe(str(python), env, _VERSION_PROBE)
    if not found or found.split()[0] != REF_VERSION:
        raise SystemExit(f"the reference venv does not import segment.analytics {REF_VERSION}: {found!r}")
    return str(python)


def make_variants(ref_python: str, ours_src: Path, ours_python: str) -> tuple[list[Variant], list[str]]:
    """The reference, ours with the standard library's json, and ours with orjson when it is installed."""
    notes: list[str] = []
    ref_env = _clean_env()
    ours_env = _clean_env()
    ours_env["PYTHONPATH"] = str(ours_src)
    variants = [
        Variant("ref", f"reference {REF_VERSION}", ref_python, ref_env, False, REF_VENV, REF_VERSION),
        Variant("ours", "ours (stdlib json)", ours_python, ours_env, False, ours_src / "segment"),
    ]
    has_orjson = _probe(ours_python, ours_env, "import orjson; print(orjson.__version__)")
    if has_orjson:
        variants.append(
            Variant("ours_orjson", f"ours + orjson {has_orjson}", ours_python, ours_env, True, ours_src / "segment")
        )
    else:
        notes.append("orjson is not installed for our interpreter: the fast-JSON variant was not measured")
    return variants, notes


# -- pinning ---------------------------------------------------------------------------------------


@dataclass
class Placement:
    """Where the SDK's process and the sink run: command prefixes (``taskset -c N``) or nothing."""

    name: str
    sdk: list[str] = field(default_factory=list)
    sink: list[str] = field(default_factory=list)
    description: str = ""


def placements(wanted: list[str]) -> tuple[list[Placement], list[str]]:
    """The pinned placement (if possible) and the unpinned one, as asked."""
    notes: list[str] = []
    result: list[Placement] = []
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    taskset = shutil.which("taskset")
    for name in wanted:
        if name == "pinned":
            if len(cpus) < 2:
                notes.append(f"pinning not possible: only {len(cpus) or 'an unknown number of'} CPU(s) available")
                continue
            if not taskset:
                notes.append("pinning not possible: taskset not found (apt-get install util-linux)")
                continue
            sdk_cpu, sink_cpu = cpus[0], cpus[1]
            result.append(
                Placement(
                    "pinned",
                    [taskset, "-c", str(sdk_cpu)],
                    [taskset, "-c", str(sink_cpu)],
                    f"SDK process on CPU {sdk_cpu}, sink on CPU {sink_cpu} (taskset)",
                )
            )
        elif name == "unpinned":
            result.append(Placement("unpinned", [], [], "no pinning: the OS places every thread"))
        else:
            raise SystemExit(f"unknown mode {name!r}")
    return result, notes


# -- sink ------------------------------------------------------------------------------------------


class SinkProcess:
    """``bench/sink.py`` in its own process (stopped by closing its stdin)."""

    def __init__(self, prefix: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(BENCH / "sink.py"), "--port", "0", "--watch-stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_clean_env(),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the sink did not start")
        self.port = int(json.loads(line)["port"])

    def stop(self) -> None:
        """Close stdin and wait; terminate this process only if it does not exit."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(10)


def measure_ceiling(placement: Placement, port: int, seconds: float) -> dict[str, Any]:
    """The sink's ceiling with one keep-alive connection, plain and gzip, load generator placed like the SDK."""
    out: dict[str, Any] = {}
    for gzip in (False, True):
        cmd = [
            *placement.sdk,
            sys.executable,
            str(BENCH / "sink.py"),
            "--ceiling",
            "--port",
            str(port),
            "--seconds",
            str(seconds),
        ] + (["--gzip"] if gzip else [])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_clean_env(), check=True)
        out["gzip" if gzip else "plain"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# -- running workloads -----------------------------------------------------------------------------


def run_workload(variant: Variant, placement: Placement, workload: str, port: int, n: int) -> dict[str, Any]:
    """One workload in a fresh subprocess; returns its JSON figures after checking which library it used."""
    cmd = [
        *placement.sdk,
        variant.python,
        str(BENCH / "workloads.py"),
        workload,
        "--port",
        str(port),
        "--n",
        str(n),
        "--orjson",
        "on" if variant.orjson else "off",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=variant.env, cwd=str(BENCH))
    if done.returncode != 0:
        raise SystemExit(f"{variant.name} {workload} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lib = result["library"]
    if not Path(lib["file"]).resolve().is_relative_to(variant.expect_file_under.resolve()):
        raise SystemExit(f"{variant.name} imported {lib['file']}, expected a file under {variant.expect_file_under}")
    if variant.expect_version and lib["version"] != variant.expect_version:
        raise SystemExit(f"{variant.name} imported version {lib['version']}, expected {variant.expect_version}")
    if bool(lib["orjson"]) != variant.orjson:
        raise SystemExit(f"{variant.name}: orjson in use is {lib['orjson']}, expected {variant.orjson}")
    if result["delivered"] != result["expected"]:
        raise SystemExit(f"{variant.name} {workload}: delivered {result['delivered']} of {result['expected']}")
    return dict(result)


# -- figures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One line of the table: where the figure comes from and what the goal is."""

    key: str
    label: str
    workload: str
    field: str
    unit: str
    fmt: str
    goal: Optional[str] = None  # "le:0.333" ratio at most, "ge:3" ratio at least
    goal_orjson: Optional[str] = None  # a different goal for the orjson variant
    ratio: bool = True  # False: a count to read as it is (events lost), no ratio to the reference


METRICS = (
    Metric("a_caller_cpu", "a. caller CPU per track()", "caller", "caller_cpu_us", "µs", "{:.2f}", "le:0.3334"),
    Metric("a_caller_wall", "a. caller wall time per track()", "caller", "caller_wall_us", "µs", "{:.2f}"),
    Metric(
        "b_throughput",
        "b. throughput, 1st track() to flush()",
        "throughput",
        "events_per_s",
        "events/s",
        "{:,.0f}",
        "ge:3",
        "ge:5",
    ),
    Metric("c_cpu", "c. CPU (user+sys) per 100k delivered", "throughput", "cpu_s_per_100k", "s", "{:.2f}", "le:0.3334"),
    Metric("d_peak_rss", "d. peak RSS, throughput run", "throughput", "peak_rss_mb", "MB", "{:.1f}"),
    Metric(
        "d_per_event",
        "d. memory per queued event (tracemalloc)",
        "memory",
        "tracemalloc_bytes_per_event",
        "B",
        "{:,.0f}",
        "le:0.5",
    ),
    Metric("d_per_event_rss", "d. RSS growth per queued event", "memory", "rss_bytes_per_event", "B", "{:,.0f}"),
    Metric(
        "e_plain", "e. body bytes per event, gzip off", "wire", "plain_body_bytes_per_event", "B", "{:.1f}", "le:0.95"
    ),
    Metric("e_gzip", "e. body bytes per event, gzip on", "wire", "gzip_body_bytes_per_event", "B", "{:.1f}", "le:1.0"),
    Metric(
        "e_plain_wire", "e. bytes per event with headers, gzip off", "wire", "plain_wire_bytes_per_event", "B", "{:.1f}"
    ),
    Metric(
        "e_gzip_wire", "e. bytes per event with headers, gzip on", "wire", "gzip_wire_bytes_per_event", "B", "{:.1f}"
    ),
    Metric(
        "f_backfill",
        "f. backfill (ours: on_full='block'): delivered",
        "backfill",
        "events_per_s",
        "events/s",
        "{:,.0f}",
    ),
    Metric(
        "f_backfill_lost", "f. backfill: events lost (must be 0)", "backfill", "lost", "events", "{:,.0f}", ratio=False
    ),
)


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _goal_met(goal: Optional[str], ratio: Optional[float]) -> Optional[bool]:
    if goal is None or ratio is None:
        return None
    op, _, bound = goal.partition(":")
    limit = float(bound)
    return ratio <= limit if op == "le" else ratio >= limit


def _goal_text(goal: Optional[str]) -> str:
    if goal is None:
        return ""
    op, _, bound = goal.partition(":")
    shown = {"0.3334": "1/3", "0.5": "1/2"}.get(bound, bound)
    return ("≤ " if op == "le" else "≥ ") + shown + "x"


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]], variants: list[Variant]) -> list[dict[str, Any]]:
    """Medians, ranges, ratios against the reference and goal verdicts, one row per metric."""
    rows = []
    for metric in METRICS:
        per_workload = runs.get(metric.workload)
        if not per_workload:
            continue
        row: dict[str, Any] = {"key": metric.key, "label": metric.label, "unit": metric.unit, "variants": {}}
        ref_median: Optional[float] = None
        for variant in variants:
            values = [r[metric.field] for r in per_workload.get(variant.name, []) if metric.field in r]
            if not values:
                continue
            st = _stats(values)
            if variant.name == "ref":
                ref_median = st["median"]
            row["variants"][variant.name] = st
        ref_by_rep = {
            r["rep"]: r[metric.field] for r in per_workload.get("ref", []) if metric.field in r and "rep" in r
        }
        for variant in variants:
            st = row["variants"].get(variant.name)
            if st is None or variant.name == "ref" or not metric.ratio:
                continue
            paired = [
                r[metric.field] / ref_by_rep[r["rep"]]
                for r in per_workload.get(variant.name, [])
                if metric.field in r and ref_by_rep.get(r.get("rep"))
            ]
            if paired:
                st["paired_ratio"] = _stats(paired)
            st["ratio_of_medians"] = st["median"] / ref_median if ref_median else None
            # the headline ratio pairs each run with the reference run of the same repetition (seconds apart),
            # which drifts of a shared machine affect far less than they affect a ratio of medians
            ratio = st["paired_ratio"]["median"] if paired else st["ratio_of_medians"]
            goal = metric.goal_orjson if (variant.orjson and metric.goal_orjson) else metric.goal
            st["ratio"] = ratio
            st["goal"] = goal
            st["met"] = _goal_met(goal, ratio)
        rows.append(row)
    return rows


def _ratio_text(ratio: float, goal: Optional[str]) -> str:
    """``0.29x``; three decimals when two would round onto the goal's bound and hide the verdict."""
    bound = float(goal.partition(":")[2]) if goal else None
    digits = 3 if bound is not None and round(ratio, 2) == round(bound, 2) else 2
    return f"{ratio:.{digits}f}x"


def _fmt(metric: Metric, value: float) -> str:
    return metric.fmt.format(value)


def render_table(rows: list[dict[str, Any]], variants: list[Variant]) -> str:
    """A Markdown table: median (min-max) per variant, ratio to the reference and the goal verdict."""
    by_key = {m.key: m for m in METRICS}
    head = ["figure", "unit"]
    for variant in variants:
        head.append(variant.label)
        if variant.name != "ref":
            head.append("ratio (goal)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        metric = by_key[row["key"]]
        cells = [row["label"], row["unit"]]
        for variant in variants:
            st = row["variants"].get(variant.name)
            if st is None:
                cells.append("—")
                if variant.name != "ref":
                    cells.append("")
                continue
            cells.append(f"{_fmt(metric, st['median'])} ({_fmt(metric, st['min'])}-{_fmt(metric, st['max'])})")
            if variant.name != "ref":
                ratio = st.get("ratio")
                text = "—" if ratio is None else _ratio_text(ratio, st.get("goal"))
                paired = st.get("paired_ratio")
                if paired and paired["n"] > 1:
                    text += f" [{paired['min']:.2f}-{paired['max']:.2f}]"
                if st.get("goal"):
                    verdict = "✅" if st["met"] else "❌"
                    text += f" ({_goal_text(st['goal'])} {verdict})"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_ceiling(ceiling: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """One line on the sink's ceiling and whether the fastest variant came near it."""
    plain = ceiling["plain"]["events_per_s"]
    gz = ceiling["gzip"]["events_per_s"]
    text = (
        f"Sink ceiling (one keep-alive connection, 100-event batches, load generator placed like the SDK): "
        f"{plain:,.0f} events/s plain, {gz:,.0f} events/s gzip."
    )
    tp = next((r for r in rows if r["key"] == "b_throughput"), None)
    if tp:
        best = max(st["median"] for st in tp["variants"].values())
        share = best / plain
        text += f" Fastest throughput median is {share:.0%} of the plain ceiling"
        text += " — the sink may be the bottleneck." if share > 0.5 else " — the sink is not the bottleneck."
    return text


# -- README and JSON -------------------------------------------------------------------------------


def render_markdown(report: dict[str, Any], variants: list[Variant]) -> str:
    """The results section of bench/README.md."""
    meta = report["meta"]
    out = [
        f"Latest results: **{meta['date']}**, `{meta['command']}` on commit `{meta.get('ours_commit') or '?'}` — "
        f"{meta['machine']}, Python {meta['python']}, {meta['cpus']} CPUs, sizes {meta['sizes']}, "
        f"{meta.get('seconds', 0):.0f} s in all.",
        "",
        "Each cell: median (min-max) over the repetitions. Ratio: ours / reference, computed per repetition "
        "(each run against the reference run of the same repetition, seconds apart): median [min-max], "
        "then the goal and whether the median ratio meets it.",
    ]
    for note in meta["notes"]:
        out += ["", f"> {note}"]
    for mode in report["modes"]:
        out += [
            "",
            f"### {mode['name']} — {mode['description']}, {mode['reps']} repetitions",
            "",
            render_table(mode["rows"], variants),
            "",
            render_ceiling(mode["ceiling"], mode["rows"]),
        ]
    return "\n".join(out) + "\n"


def update_readme(section: str) -> None:
    """Replace the text between the result markers of bench/README.md (append the markers if absent)."""
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmark\n"
    block = f"{START_MARK}\n{section}{END_MARK}"
    if START_MARK in text and END_MARK in text:
        before, _, rest = text.partition(START_MARK)
        _, _, after = rest.partition(END_MARK)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n## Latest results\n\n" + block + "\n"
    README.write_text(text, encoding="utf-8")


# -- main ------------------------------------------------------------------------------------------


def run_mode(
    placement: Placement,
    variants: list[Variant],
    workloads: list[str],
    sizes: dict[str, int],
    reps: int,
    ceiling_seconds: float,
    progress: Callable[[str], None],
    few_reps: int = 1,
) -> dict[str, Any]:
    """Every workload of every variant, ``reps`` times, the variants' order rotating each repetition."""
    sink = SinkProcess(placement.sink)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {w: {v.name: [] for v in variants} for w in workloads}
    try:
        ceiling = measure_ceiling(placement, sink.port, ceiling_seconds)
        progress(
            f"[{placement.name}] sink ceiling: {ceiling['plain']['events_per_s']:,.0f} events/s plain, "
            f"{ceiling['gzip']['events_per_s']:,.0f} gzip"
        )
        for rep in range(reps):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for workload in workloads:
                if workload in FEW_REPS and rep >= few_reps:
                    continue
                for variant in order:
                    started = time.perf_counter()
                    result = run_workload(variant, placement, workload, sink.port, sizes[workload])
                    result["seconds_total"] = time.perf_counter() - started
                    result["rep"] = rep
                    runs[workload][variant.name].append(result)
                    progress(
                        f"[{placement.name}] rep {rep + 1}/{reps} {workload:<10} {variant.name:<12} "
                        f"{result['seconds_total']:5.1f}s"
                    )
    finally:
        sink.stop()
    rows = summarize(runs, variants)
    return {
        "name": placement.name,
        "description": placement.description,
        "reps": reps,
        "ceiling": ceiling,
        "rows": rows,
        "runs": runs,
    }


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller N and fewer repetitions")
    parser.add_argument("--reps", type=int, default=None, help="repetitions pinned (default 7, quick 2)")
    parser.add_argument("--unpinned-reps", type=int, default=None, help="repetitions unpinned (default 3, quick 1)")
    parser.add_argument("--backfill-reps", type=int, default=1, help="repetitions of the 1M-event backfill (default 1)")
    parser.add_argument("--modes", default="pinned,unpinned", help="pinned, unpinned or both (comma-separated)")
    parser.add_argument("--workloads", default=",".join(WORKLOAD_ORDER))
    parser.add_argument("--variants", default="ref,ours,ours_orjson", help="which of ref, ours, ours_orjson to run")
    parser.add_argument("--ours-src", type=Path, default=ROOT, help="directory holding the segment/ package to test")
    parser.add_argument("--recreate-ref", action="store_true", help="rebuild .bench-venv")
    parser.add_argument("--no-write", action="store_true", help="do not write results/latest.json nor README.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    sizes = dict(QUICK_SIZES if args.quick else FULL_SIZES)
    reps = args.reps or (2 if args.quick else 7)
    unpinned_reps = args.unpinned_reps or (1 if args.quick else 3)
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOAD_ORDER:
            raise SystemExit(f"unknown workload {w!r}")
    ours_src = args.ours_src.resolve()

    started = time.perf_counter()
    ref_python = ensure_reference_venv(args.recreate_ref)
    variants, notes = make_variants(ref_python, ours_src, sys.executable)
    chosen = [v for v in args.variants.split(",") if v]
    variants = [v for v in variants if v.name in chosen]
    modes, pin_notes = placements([m for m in args.modes.split(",") if m])
    notes += pin_notes
    for note in notes:
        log("note: " + note)

    report: dict[str, Any] = {
        "meta": {
            "date": _dt.date.today().isoformat(),
            "command": "python bench/run.py" + (" --quick" if args.quick else ""),
            "machine": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "sizes": sizes,
            "ours_src": str(ours_src),
            "ours_commit": git_state(ours_src),
            "variants": {v.name: v.label for v in variants},
            "notes": notes,
        },
        "modes": [],
    }
    for placement in modes:
        count = reps if placement.name == "pinned" else unpinned_reps
        ceiling_seconds = 1.0 if args.quick else 2.0
        mode = run_mode(placement, variants, workloads, sizes, count, ceiling_seconds, log, args.backfill_reps)
        report["modes"].append(mode)
        print(f"\n## {placement.name}: {placement.description}, {count} repetitions\n")
        print(render_table(mode["rows"], variants))
        print("\n" + render_ceiling(mode["ceiling"], mode["rows"]))
    report["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    for note in notes:
        print(f"\nnote: {note}")
    print(f"\n(total {report['meta']['seconds']:.0f}s)")

    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=1))
        update_readme(render_markdown(report, variants))
        log(f"wrote {RESULTS.relative_to(ROOT)} and the results section of {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
