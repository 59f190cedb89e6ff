"""rustpy vs Triton's official Python backend, side by side in one server.

Run through ci/bench (which installs, builds and then runs this with the
client venv's Python); directly it is:

    .rustpy-deps/venv/bin/python bench/bench.py [--quick] [--duration S] [--repeat N]
        [--workloads add_sub,identity,upper] [--variants python,rustpy_compat,rustpy,native]
        [--loadgen PATH] [--out DIR]

One tritonserver (tests/e2e/triton.py's harness) serves bench/models/, where
every workload exists as four models with identical configs:

    <w>_python         backend "python", TritonPythonModel (pb_utils)
    <w>_rustpy_compat  backend "rustpy", the byte-identical TritonPythonModel file
    <w>_rustpy         backend "rustpy", rustpy's batched API (class Model)
    <w>_native         backend "rustpy", rustpy.native=echo: no Python at all
    <w>_rustpy_process, <w>_rustpy_compat_process
                       the rustpy and rustpy_compat models with rustpy.isolation=process

Each (workload, size, concurrency, variant) point is measured --repeat times by
rustpy-loadgen (crates/rustpy-bench), interleaving the variants, and the batch
sizes the dynamic batcher formed are read from /v2/models/<m>/stats. Results:
bench-results/<timestamp>/{results.json, runs.jsonl, table.md, bench.png,
tritonserver.log}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "bench" / "models"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from triton import TritonServer, TritonStartError  # noqa: E402

MiB = 1 << 20

VARIANTS = ["python", "rustpy_compat", "rustpy", "native", "rustpy_compat_process", "rustpy_process"]
VARIANT_LABEL = {
    "python": "python (official backend)",
    "rustpy_compat": "rustpy compat (same file)",
    "rustpy": "rustpy batched API",
    "native": "native echo (ceiling)",
    "rustpy_compat_process": "rustpy compat, process-isolated",
    "rustpy_process": "rustpy batched API, process-isolated",
}

# workload -> (description, [(payload bytes or None, [concurrency, ...])])
WORKLOADS = {
    "add_sub": ("small tensors: FP32[4] add/sub", [(None, [1, 8, 32])]),
    "identity": ("large tensors: UINT8 identity", [(1 * MiB, [1, 4]), (16 * MiB, [1, 4])]),
    "upper": ("BYTES: upper-case one string", [(None, [8])]),
}

# Lines of a config that may differ between the variants of one workload.
_VARIANT_LINE = re.compile(r'^\s*(#.*|name\s*:.*|backend\s*:.*|parameters\s*\{\s*key:\s*"rustpy\.(native|isolation)".*)$')


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- preflight
def check_repository(workloads, variants) -> list[str]:
    """The same model code and the same config across variants."""
    problems = []
    for w in workloads:
        ref = MODELS / f"{w}_python" / "1" / "model.py"
        for compat_variant in ("rustpy_compat", "rustpy_compat_process"):
            compat = MODELS / f"{w}_{compat_variant}" / "1" / "model.py"
            if ref.is_file() and compat.is_file():
                if hashlib.sha256(ref.read_bytes()).digest() != hashlib.sha256(compat.read_bytes()).digest():
                    problems.append(f"{compat.relative_to(ROOT)} differs from {ref.relative_to(ROOT)} "
                                    "(the compat variants must run the same file)")
            else:
                problems.append(f"missing {ref.relative_to(ROOT)} or {compat.relative_to(ROOT)}")
        configs = {}
        for v in VARIANTS:
            cfg = MODELS / f"{w}_{v}" / "config.pbtxt"
            if not cfg.is_file():
                problems.append(f"missing {cfg.relative_to(ROOT)}")
                continue
            text = cfg.read_text()
            if f'name: "{w}_{v}"' not in text:
                problems.append(f"{cfg.relative_to(ROOT)}: name is not {w}_{v}")
            configs[v] = [ln.strip() for ln in text.splitlines()
                          if ln.strip() and not _VARIANT_LINE.match(ln)]
        base = configs.get("python")
        for v, lines in configs.items():
            if base is not None and lines != base:
                problems.append(f"bench/models/{w}_{v}/config.pbtxt differs from {w}_python's "
                                "beyond name/backend/rustpy.native/rustpy.isolation")
    return problems


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "os": platform.platform(),
        "virtualized": Path("/proc/cpuinfo").exists() and "hypervisor" in Path("/proc/cpuinfo").read_text(),
        "loadavg_start": os.getloadavg(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


# ------------------------------------------------------------------ running
def batch_delta(before: dict, after: dict) -> dict:
    def hist(stats):
        return {int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0))
                for b in stats.get("batch_stats", [])}
    h0, h1 = hist(before), hist(after)
    h = {k: h1.get(k, 0) - h0.get(k, 0) for k in sorted(set(h0) | set(h1))}
    h = {k: v for k, v in h.items() if v}
    inferences = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    return {
        "inferences": inferences,
        "executions": executions,
        "avg_batch": round(inferences / executions, 2) if executions else None,
        "max_batch": max(h) if h else None,
        "batch_hist": {str(k): v for k, v in h.items()},
    }


def run_loadgen(args, server, model, workload, size, conc, expect, duration, warmup, label):
    cmd = [str(args.loadgen), "--url", server.http_url, "--model", model, "--workload", workload,
           "--concurrency", str(conc), "--duration", str(duration), "--warmup", str(warmup),
           "--expect", expect, "--label", label]
    if size:
        cmd += ["--bytes", str(size)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"rustpy-loadgen failed (exit {p.returncode}): {p.stderr.strip()}")
    return json.loads(line)


def expect_for(variant: str) -> str:
    return "echo" if variant == "native" else "compute"


def probe(args, server, model, workload, size, variant) -> str | None:
    """None if the model answers correctly, else why not."""
    try:
        r = run_loadgen(args, server, model, workload, size, 1, expect_for(variant), 0.3, 0.0, "probe")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r["completed"] == 0 or r["errors"] or r["validation_errors"]:
        return r.get("first_error") or "no request completed"
    return None


def wait_loaded(server, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        index = server.repository_index()
        if all(m.get("state") not in (None, "LOADING", "UNLOADING") for m in index) or \
                time.monotonic() > deadline:
            return {m["name"]: m for m in index}
        time.sleep(0.5)


# --------------------------------------------------------------- reporting
def summarize(runs: list[dict]) -> dict:
    def stat(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    ok = [r for r in runs if r["loadgen"]["completed"] > 0]
    inferences = sum(r["stats"]["inferences"] for r in runs)
    executions = sum(r["stats"]["executions"] for r in runs)
    hist: dict = {}
    for r in runs:
        for k, v in r["stats"]["batch_hist"].items():
            hist[k] = hist.get(k, 0) + v
    return {
        "repeats": len(runs),
        "throughput_rps": stat([r["loadgen"]["throughput_rps"] for r in ok]),
        "in_bytes_per_s": stat([r["loadgen"]["in_bytes_per_s"] for r in ok]),
        "p50_us": stat([r["loadgen"]["latency_us"]["p50"] for r in ok]),
        "p90_us": stat([r["loadgen"]["latency_us"]["p90"] for r in ok]),
        "p99_us": stat([r["loadgen"]["latency_us"]["p99"] for r in ok]),
        "errors": sum(r["loadgen"]["errors"] for r in runs),
        "validation_errors": sum(r["loadgen"]["validation_errors"] for r in runs),
        "first_error": next((r["loadgen"]["first_error"] for r in runs if r["loadgen"]["first_error"]), None),
        "avg_batch": round(inferences / executions, 2) if executions else None,
        "max_batch": max((int(k) for k in hist), default=None),
        "batch_hist": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
    }


def fmt_num(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fmt_range(s, scale=1.0, digits=0):
    """median (min–max) or n/a."""
    if not s:
        return "n/a"
    if s["min"] == s["max"]:
        return fmt_num(s["median"] * scale, digits)
    return (f"{fmt_num(s['median'] * scale, digits)} "
            f"({fmt_num(s['min'] * scale, digits)}–{fmt_num(s['max'] * scale, digits)})")


def ms_digits(us):
    return 2 if us is not None and us < 10_000 else 1


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(value, target, higher_is_better=True):
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "misses"


def median_of(summary, key):
    s = summary.get(key) if summary else None
    return s["median"] if s else None


def render(results: dict) -> str:
    out = []
    settings = results["settings"]
    out.append(f"Settings: {settings['repeat']} repeat(s) × {settings['duration_s']:g} s per point "
               f"(+{settings['warmup_s']:g} s warm-up), variants interleaved; figures are the median "
               "over repeats with (min–max) across repeats.")
    out.append("")
    avail = results["availability"]
    missing = {m: a for m, a in avail.items() if a["status"] != "ok"}
    points = results["points"]

    def cell(workload, size, conc, variant):
        return points.get(key_of(workload, size, conc, variant))

    for w, (desc, sizes) in WORKLOADS.items():
        if w not in settings["workloads"]:
            continue
        out.append(f"### {w} — {desc}")
        out.append("")
        large = w == "identity"
        head = ["size"] if large else []
        head += ["c", "variant", "req/s"]
        head += ["MiB/s (per direction)"] if large else []
        head += ["p50 ms", "p90 ms", "p99 ms", "batch avg (max)", "errors"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for size, concs in sizes:
            for c in concs:
                for v in settings["variants"]:
                    model = f"{w}_{v}"
                    s = cell(w, size, c, v)
                    row = [f"{size // MiB} MiB"] if large else []
                    row += [str(c), VARIANT_LABEL[v]]
                    if model in missing or s is None:
                        why = missing.get(model, {}).get("status", "n/a")
                        row += [why] + ["n/a"] * (len(head) - len(row) - 1)
                        out.append("| " + " | ".join(row) + " |")
                        continue
                    row.append(fmt_range(s["throughput_rps"], 1.0, 1 if large else 0))
                    if large:
                        row.append(fmt_range(s["in_bytes_per_s"], 1 / MiB, 0))
                    for k in ("p50_us", "p90_us", "p99_us"):
                        st = s[k]
                        d = ms_digits(st["median"]) if st else 0
                        row.append(fmt_range(st, 1e-3, d))
                    row.append(f"{fmt_num(s['avg_batch'], 2)} ({s['max_batch'] or 'n/a'})")
                    errs = s["errors"] + s["validation_errors"]
                    row.append(str(errs))
                    out.append("| " + " | ".join(row) + " |")
        out.append("")
        # Ratios measured in this run.
        lines = []
        if w == "add_sub":
            cmax, cmin = max(sizes[0][1]), min(sizes[0][1])
            for v in ("rustpy", "rustpy_compat", "rustpy_process", "rustpy_compat_process"):
                if v not in settings["variants"] or "python" not in settings["variants"]:
                    continue
                r_tp = ratio(median_of(cell(w, None, cmax, v), "throughput_rps"),
                             median_of(cell(w, None, cmax, "python"), "throughput_rps"))
                r_lat = ratio(median_of(cell(w, None, cmin, v), "p50_us"),
                              median_of(cell(w, None, cmin, "python"), "p50_us"))
                # Issue 11's targets for process isolation: at least the
                # official backend's throughput, no more than its p50.
                tp_target, lat_target = (1.0, 1.0) if v.endswith("_process") else (3.0, 1 / 3)
                lines.append(f"- {VARIANT_LABEL[v]} / python throughput at c={cmax}: "
                             f"**{fmt_num(r_tp, 2)}×** (target ≥ {fmt_num(tp_target, 0)}×: "
                             f"{verdict(r_tp, tp_target)})")
                lines.append(f"- {VARIANT_LABEL[v]} / python p50 at c={cmin}: "
                             f"**{fmt_num(r_lat, 2)}** (target ≤ {fmt_num(lat_target, 2)}: "
                             f"{verdict(r_lat, lat_target, False)})")
            if "native" in settings["variants"] and "python" in settings["variants"]:
                r_tp = ratio(median_of(cell(w, None, cmax, "native"), "throughput_rps"),
                             median_of(cell(w, None, cmax, "python"), "throughput_rps"))
                r_lat = ratio(median_of(cell(w, None, cmin, "native"), "p50_us"),
                              median_of(cell(w, None, cmin, "python"), "p50_us"))
                lines.append(f"- bound: native echo / python is {fmt_num(r_tp, 2)}× throughput at c={cmax} and "
                             f"{fmt_num(r_lat, 2)} p50 at c={cmin}; no backend behind this server and client "
                             "can do better than the echo")
            if "native" in settings["variants"]:
                for v in ("rustpy", "rustpy_compat", "rustpy_process", "rustpy_compat_process"):
                    if v not in settings["variants"]:
                        continue
                    parts = []
                    for c in sizes[0][1]:
                        r = ratio(median_of(cell(w, None, c, v), "throughput_rps"),
                                  median_of(cell(w, None, c, "native"), "throughput_rps"))
                        parts.append(f"c={c}: {fmt_num(None if r is None else 100 * r, 0)}%")
                    r32 = ratio(median_of(cell(w, None, cmax, v), "throughput_rps"),
                                median_of(cell(w, None, cmax, "native"), "throughput_rps"))
                    lines.append(f"- {VARIANT_LABEL[v]} / native echo throughput: {', '.join(parts)} "
                                 f"(target ≥ 80% at c={cmax}: {verdict(r32, 0.8)})")
        elif w == "identity" and "native" in settings["variants"]:
            for v in ("rustpy", "rustpy_compat", "rustpy_process", "rustpy_compat_process", "python"):
                if v not in settings["variants"]:
                    continue
                parts, worst = [], None
                for size, concs in sizes:
                    for c in concs:
                        # Per-byte cost ratio = native bytes/s ÷ variant bytes/s.
                        r = ratio(median_of(cell(w, size, c, "native"), "in_bytes_per_s"),
                                  median_of(cell(w, size, c, v), "in_bytes_per_s"))
                        parts.append(f"{size // MiB} MiB c={c}: {fmt_num(r, 2)}×")
                        if r is not None:
                            worst = r if worst is None else max(worst, r)
                target = f" (target ≤ 1.5×: {verdict(worst, 1.5, False)})" if v == "rustpy" else ""
                lines.append(f"- per-byte cost {VARIANT_LABEL[v]} / native echo: {', '.join(parts)}{target}")
        elif w == "upper" and "python" in settings["variants"]:
            c = sizes[0][1][0]
            for v in ("rustpy", "rustpy_compat", "rustpy_process", "rustpy_compat_process"):
                if v in settings["variants"]:
                    r = ratio(median_of(cell(w, None, c, v), "throughput_rps"),
                              median_of(cell(w, None, c, "python"), "throughput_rps"))
                    lines.append(f"- {VARIANT_LABEL[v]} / python throughput at c={c}: **{fmt_num(r, 2)}×**")
        if lines:
            out.extend(lines)
            out.append("")
    if missing:
        out.append("Models not measured:")
        for m, a in sorted(missing.items()):
            out.append(f"- `{m}`: {a['status']} — {a.get('reason', '')}")
        out.append("")
    noisy = []
    for k, s in points.items():
        tp = s["throughput_rps"]
        if tp and tp["median"] and s["repeats"] > 1:
            spread = (tp["max"] - tp["min"]) / tp["median"]
            if spread > 0.2:
                noisy.append(f"{k} {100 * spread:.0f}%")
    if noisy:
        out.append("Noisy points, (max − min) / median of throughput over the repeats above 20%: "
                   + ", ".join(noisy))
        out.append("")
    loads = [r["loadavg"][0] for r in results.get("runs", []) if r.get("loadavg")]
    if loads:
        out.append(f"1-minute load average during the runs: {min(loads):.1f}–{max(loads):.1f} "
                   f"(median {statistics.median(loads):.1f}) on {results['machine']['cpus']} CPUs, "
                   "server and load generator included.")
        out.append("")
    return "\n".join(out)


def key_of(workload, size, conc, variant) -> str:
    s = f"{size // MiB}MiB" if size else "-"
    return f"{workload}/{s}/c{conc}/{variant}"


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        log("matplotlib is not installed: no plot (ci/bench installs it into the venv)")
        return False
    settings, points = results["settings"], results["points"]
    variants = settings["variants"]
    colors = {"python": "#d62728", "rustpy_compat": "#ff7f0e", "rustpy": "#1f77b4", "native": "#7f7f7f",
              "rustpy_compat_process": "#bcbd22", "rustpy_process": "#17becf"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(f"rustpy vs official Python backend — {results['machine']['cpus']} CPU "
                 f"{results['machine']['cpu']}, {settings['repeat']}×{settings['duration_s']:g} s per point "
                 "(bars/whiskers: min–max over repeats)", fontsize=10)

    def err(s, scale=1.0):
        if not s:
            return None, (0, 0)
        m = s["median"] * scale
        return m, (m - s["min"] * scale, s["max"] * scale - m)

    if "add_sub" in settings["workloads"]:
        concs = WORKLOADS["add_sub"][1][0][1]
        for ax, metric, scale, title, ylabel in (
                (axes[0][0], "throughput_rps", 1.0, "add_sub FP32[4]: throughput", "requests/s"),
                (axes[0][1], "p50_us", 1e-3, "add_sub FP32[4]: p50 latency", "ms (log)")):
            for v in variants:
                xs, ys, lo, hi = [], [], [], []
                for c in concs:
                    m, (l, h) = err((points.get(key_of("add_sub", None, c, v)) or {}).get(metric), scale)
                    if m is not None:
                        xs.append(c), ys.append(m), lo.append(l), hi.append(h)
                if xs:
                    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=colors[v],
                                label=VARIANT_LABEL[v])
            ax.set_xscale("log", base=2)
            ax.set_xticks(concs, [str(c) for c in concs])
            ax.set_xlabel("concurrency")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            if metric == "p50_us":
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            else:
                ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)

    def bars(ax, groups, metric, scale, title, ylabel):
        width = 0.8 / max(1, len(variants))
        for i, v in enumerate(variants):
            xs, ys, lo, hi = [], [], [], []
            for g, (w, size, c) in enumerate(groups):
                m, (l, h) = err((points.get(key_of(w, size, c, v)) or {}).get(metric), scale)
                if m is not None:
                    xs.append(g + (i - (len(variants) - 1) / 2) * width)
                    ys.append(m), lo.append(l), hi.append(h)
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=colors[v], label=VARIANT_LABEL[v])
        ax.set_xticks(range(len(groups)),
                      [(f"{s // MiB} MiB " if s else "") + f"c={c}" for _, s, c in groups])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)

    if "identity" in settings["workloads"]:
        groups = [("identity", s, c) for s, cs in WORKLOADS["identity"][1] for c in cs]
        bars(axes[1][0], groups, "in_bytes_per_s", 1 / MiB, "identity UINT8: tensor throughput",
             "MiB/s per direction")
    else:
        axes[1][0].axis("off")
    if "upper" in settings["workloads"]:
        groups = [("upper", None, c) for c in WORKLOADS["upper"][1][0][1]]
        bars(axes[1][1], groups, "throughput_rps", 1.0, "upper BYTES: throughput", "requests/s")
    else:
        axes[1][1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="rustpy vs the official Python backend, one server, one run")
    p.add_argument("--duration", type=float, default=None, help="seconds measured per point (default 10)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per point (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s per point, 0.5 s warm-up")
    p.add_argument("--repeat", type=int, default=3, help="repeats per point (default 3)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of %(default)s")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of %(default)s")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    p.add_argument("--loadgen", type=Path, default=target / "release" / "rustpy-loadgen")
    p.add_argument("--out", type=Path, default=None, help="results directory (default bench-results/<time>)")
    a = p.parse_args(argv)
    a.duration = a.duration if a.duration is not None else (2.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 2.0)
    workloads = [w for w in a.workloads.split(",") if w]
    variants = [v for v in a.variants.split(",") if v]
    bad = [w for w in workloads if w not in WORKLOADS] + [v for v in variants if v not in VARIANTS]
    if bad or a.repeat < 1 or a.duration <= 0:
        p.error(f"bad workload/variant {bad} or repeat/duration")
    if not a.loadgen.is_file():
        p.error(f"{a.loadgen} not found: cargo build --release -p rustpy-bench")

    problems = check_repository(workloads, variants)
    if problems:
        for pr in problems:
            log("repository check: " + pr)
        return 1
    log("repository check: TritonPythonModel files identical between python and rustpy_compat; "
        "configs identical modulo name/backend/rustpy.native")

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out_dir = a.out or ROOT / "bench-results" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    settings = {"duration_s": a.duration, "warmup_s": a.warmup, "repeat": a.repeat, "quick": a.quick,
                "workloads": workloads, "variants": variants,
                "backend_lib": os.environ.get("RUSTPY_BACKEND_LIB", str(ROOT / "target/release/libtriton_rustpy.so")),
                "loadgen": str(a.loadgen)}
    runs: list[dict] = []
    availability: dict = {}
    server = TritonServer([MODELS], exit_on_error=False, wait_models=[], name="bench")
    log(f"starting tritonserver on {MODELS.relative_to(ROOT)} ...")
    try:
        server.start()
    except TritonStartError as e:
        log(str(e))
        return 1
    t_start = time.monotonic()
    try:
        status, meta = server.get("/v2")
        machine["tritonserver"] = meta.get("version") if isinstance(meta, dict) else None
        index = wait_loaded(server)
        plan = [(w, size, c) for w in workloads for size, concs in WORKLOADS[w][1] for c in concs]
        for w in workloads:
            for v in variants:
                m = f"{w}_{v}"
                entry = index.get(m, {})
                if entry.get("state") != "READY":
                    availability[m] = {"status": "n/a (not loaded)",
                                       "reason": entry.get("reason", "not in the repository index")}
                    continue
                size = WORKLOADS[w][1][0][0]
                why = probe(a, server, m, w, size, v)
                availability[m] = {"status": "ok"} if why is None else {"status": "error", "reason": why}
        for m, av in sorted(availability.items()):
            log(f"{m}: {av['status']}" + (f" ({av['reason'][:200]})" if av.get("reason") else ""))

        todo = [(r, w, size, c, v) for r in range(a.repeat) for (w, size, c) in plan
                for v in (variants[r % len(variants):] + variants[:r % len(variants)])
                if availability.get(f"{w}_{v}", {}).get("status") == "ok"]
        eta = len(todo) * (a.duration + a.warmup + 0.3)
        log(f"{len(todo)} runs, about {eta / 60:.1f} min; results in {out_dir}")
        with open(out_dir / "runs.jsonl", "w") as jl:
            for i, (r, w, size, c, v) in enumerate(todo, 1):
                m = f"{w}_{v}"
                before = server.model_stats(m)
                lg = run_loadgen(a, server, m, w, size, c, expect_for(v), a.duration, a.warmup,
                                 key_of(w, size, c, v))
                after = server.model_stats(m)
                run = {"repeat": r, "workload": w, "size": size, "concurrency": c, "variant": v,
                       "model": m, "loadgen": lg, "stats": batch_delta(before, after),
                       "loadavg": os.getloadavg()}
                runs.append(run)
                jl.write(json.dumps(run) + "\n")
                jl.flush()
                lat = lg["latency_us"]
                log(f"[{i}/{len(todo)}] rep {r + 1} {key_of(w, size, c, v)}: "
                    f"{lg['throughput_rps']:,.0f} req/s, p50 {lat['p50'] / 1e3:.2f} ms, "
                    f"p99 {lat['p99'] / 1e3:.2f} ms, batch {run['stats']['avg_batch']}, "
                    f"errors {lg['errors'] + lg['validation_errors']}")
                if not server.running:
                    raise RuntimeError("tritonserver died\n" + server.log_tail())
    finally:
        server.stop()
        try:
            (out_dir / "tritonserver.log").write_text(server.log_text())
        except OSError:
            pass
    machine["loadavg_end"] = os.getloadavg()

    grouped: dict = {}
    for run in runs:
        grouped.setdefault(key_of(run["workload"], run["size"], run["concurrency"], run["variant"]), []).append(run)
    results = {
        "created": stamp,
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "machine": machine,
        "settings": settings,
        "availability": availability,
        "points": {k: summarize(v) for k, v in grouped.items()},
        "runs": runs,
    }
    table = render(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "table.md").write_text(table + "\n")
    plotted = plot(results, out_dir / "bench.png")
    print(table)
    log(f"wrote {out_dir}/results.json, runs.jsonl, table.md"
        + (", bench.png" if plotted else "") + ", tritonserver.log")
    bad_runs = sum(s["errors"] + s["validation_errors"] for s in results["points"].values())
    if bad_runs:
        log(f"{bad_runs} failed or wrong responses during measurement")
    return 1 if bad_runs else 0


if __name__ == "__main__":
    sys.exit(main())
