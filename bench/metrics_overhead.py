"""What rustpy's own metrics cost (issue 26): the in-process driver, add_sub
at 32 requests in flight, with the backend's metrics on and off
(--backend-config=rustpy,metrics=false), for the batched API and the
official API (pb_utils) under rustpy.

    ci/bench --metrics-overhead [--repeat N] [--duration S] [--warmup S] [--quick]

Metrics are a backend-wide setting, so each setting needs its own server:
every repeat starts one server per setting (on, off; the order alternates
between repeats so a drifting machine load does not favour one setting)
and measures every variant on it. Each server's log must say which setting
it runs with. Prints a table (medians over the repeats, the ratio on/off per
variant, the load average over the runs) and writes metrics-overhead.json
and metrics-overhead.md to the results directory. A ratio is only worth
quoting when the load column stays below bench.NOISY_LOAD.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
import time

import bench

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S

WORKLOAD = "add_sub"
CONCURRENCY = 32
VARIANTS = ["rustpy", "rustpy_compat"]
SETTINGS = {"on": [], "off": ["rustpy,metrics=false"]}


def measure(a, out_dir, setting: str, repeat: int, runs: list) -> None:
    """One server with `setting`, every variant measured once on it."""
    tag = f"-metrics-{setting}-{repeat}"
    driver = bench.InprocDriver(a, out_dir, backend_config=SETTINGS[setting], tag=tag)
    models = [f"{WORKLOAD}_{v}" for v in VARIANTS]
    try:
        loaded = driver.start(models)
        missing = {m: why for m, why in loaded.items() if why}
        if missing:
            raise RuntimeError(f"not loaded: {missing}")
        said = f"metrics {setting})"
        if said not in driver.log_file.read_text(errors="replace"):
            raise RuntimeError(f"{driver.log_file} does not say '{said}': the setting did not apply")
        for v in VARIANTS:
            why = bench.probe(driver, f"{WORKLOAD}_{v}", WORKLOAD, None, v)
            if why:
                raise RuntimeError(f"{WORKLOAD}_{v}: {why}")
        order = VARIANTS[repeat % len(VARIANTS):] + VARIANTS[:repeat % len(VARIANTS)]
        for v in order:
            m = f"{WORKLOAD}_{v}"
            key = f"inproc/{WORKLOAD}/c{CONCURRENCY}/{v}/metrics-{setting}"
            cpu0 = cpu_seconds(driver.proc.pid)
            lg, stats = driver.run(m, WORKLOAD, None, CONCURRENCY, bench.expect_for(v),
                                   a.duration, a.warmup, key)
            cpu = cpu_seconds(driver.proc.pid) - cpu0
            # CPU time of the whole process (server, backend, Python, driver)
            # over warm-up and measurement, per request completed in the
            # measurement: less at the mercy of other work on the machine
            # than req/s.
            cpu_us = cpu / lg["completed"] * 1e6 if lg["completed"] else None
            run = {"repeat": repeat, "setting": setting, "variant": v, "loadgen": lg,
                   "stats": stats, "cpu_s": cpu, "cpu_us_per_request": cpu_us,
                   "loadavg": os.getloadavg()}
            runs.append(run)
            bench.log(f"rep {repeat + 1} {key}: {lg['throughput_rps']:,.0f} req/s, "
                      f"p50 {lg['latency_us']['p50'] / 1e3:.3f} ms, batch {stats['avg_batch']}, "
                      f"cpu {cpu_us or 0:.1f} µs/request, "
                      f"load {run['loadavg'][0]:.1f}, errors {lg['errors'] + lg['validation_errors']}")
    finally:
        driver.stop()


def summary(runs: list) -> dict:
    out = {}
    for v in VARIANTS:
        row = {}
        for setting in SETTINGS:
            mine = [r for r in runs if r["variant"] == v and r["setting"] == setting]
            if not mine:
                continue
            row[setting] = {
                "repeats": len(mine),
                "throughput_rps": statistics.median(r["loadgen"]["throughput_rps"] for r in mine),
                "throughput_min_max": [min(r["loadgen"]["throughput_rps"] for r in mine),
                                       max(r["loadgen"]["throughput_rps"] for r in mine)],
                "p50_us": statistics.median(r["loadgen"]["latency_us"]["p50"] for r in mine),
                "p99_us": statistics.median(r["loadgen"]["latency_us"]["p99"] for r in mine),
                "avg_batch": round(statistics.median(r["stats"]["avg_batch"] or 0 for r in mine), 2),
                "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] or 0 for r in mine),
                "cpu_us_min_max": [min(r["cpu_us_per_request"] or 0 for r in mine),
                                   max(r["cpu_us_per_request"] or 0 for r in mine)],
                "errors": sum(r["loadgen"]["errors"] + r["loadgen"]["validation_errors"] for r in mine),
            }
        if "on" in row and "off" in row and row["off"]["throughput_rps"]:
            row["ratio_on_off"] = row["on"]["throughput_rps"] / row["off"]["throughput_rps"]
        if "on" in row and "off" in row and row["off"]["cpu_us_per_request"]:
            row["cpu_ratio_on_off"] = (row["on"]["cpu_us_per_request"]
                                       / row["off"]["cpu_us_per_request"])
        out[v] = row
    return out


def cpu_cell(s: dict) -> str:
    if not s:
        return "n/a"
    lo, hi = s["cpu_us_min_max"]
    return f"{s['cpu_us_per_request']:.1f} ({lo:.1f}–{hi:.1f})"


def render(result: dict) -> str:
    loads = [r["loadavg"][0] for r in result["runs"]]
    lines = [
        f"rustpy metrics on vs off: in-process driver, {WORKLOAD}, c={CONCURRENCY}, "
        f"{result['settings']['repeat']} repeats of {result['settings']['duration_s']} s, "
        f"load average {min(loads):.1f}–{max(loads):.1f} (1 min; above {bench.NOISY_LOAD} is noise)",
        "",
        "| variant | on req/s | off req/s | on/off | on CPU µs/req (min–max) | off CPU µs/req (min–max) "
        "| CPU on/off | on p50 ms | off p50 ms | batch | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, row in result["summary"].items():
        on, off = row.get("on", {}), row.get("off", {})
        ratio = row.get("ratio_on_off")
        vl = [r["loadavg"][0] for r in result["runs"] if r["variant"] == v]
        cells = [
            bench.VARIANT_LABEL.get(v, v),
            f"{on['throughput_rps']:,.0f}" if on else "n/a",
            f"{off['throughput_rps']:,.0f}" if off else "n/a",
            f"{ratio:.3f}" if ratio is not None else "n/a",
            cpu_cell(on), cpu_cell(off),
            f"{row['cpu_ratio_on_off']:.3f}" if "cpu_ratio_on_off" in row else "n/a",
            f"{on['p50_us'] / 1e3:.3f}" if on else "n/a",
            f"{off['p50_us'] / 1e3:.3f}" if off else "n/a",
            str(on.get("avg_batch", "n/a")),
            bench.fmt_load(max(vl) if vl else None),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(a) -> int:
    a.duration = a.duration if a.duration is not None else (2.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 2.0)
    if not a.inproc.is_file():
        bench.log(f"{a.inproc} not found: cargo build --release -p rustpy-bench")
        return 1
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out_dir = (a.out or bench.ROOT / "bench-results" / f"metrics-{stamp}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: list = []
    t0 = time.monotonic()
    machine = bench.machine_info()
    try:
        for r in range(a.repeat):
            for setting in (["on", "off"] if r % 2 == 0 else ["off", "on"]):
                measure(a, out_dir, setting, r, runs)
    except (RuntimeError, bench.TritonStartError) as e:
        bench.log(f"metrics overhead: {e}")
        return 1
    machine["loadavg_end"] = os.getloadavg()
    result = {
        "created": stamp,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "machine": machine,
        "settings": {"workload": WORKLOAD, "concurrency": CONCURRENCY, "variants": VARIANTS,
                     "repeat": a.repeat, "duration_s": a.duration, "warmup_s": a.warmup,
                     "backend_lib": str(bench.rustpy_backend_lib())},
        "summary": summary(runs),
        "runs": runs,
    }
    table = render(result)
    (out_dir / "metrics-overhead.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "metrics-overhead.md").write_text(table + "\n")
    print(table)
    bench.log(f"wrote {out_dir}/metrics-overhead.json, metrics-overhead.md")
    bad = sum(row[s]["errors"] for row in result["summary"].values() for s in SETTINGS if s in row)
    return 1 if bad else 0
