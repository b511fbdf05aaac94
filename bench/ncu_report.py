#!/usr/bin/env python3
"""Nsight Compute's view of each profiled kernel (scripts/gpu-check's `profile` phase): the time,
DRAM traffic and throughput, SM throughput, registers, achieved occupancy and the top stall
reasons, one row a profile, read from the CSV that `ncu --import R --csv --page raw` prints (one
column a metric, a row of units, a row a kernel launch). `--page details` CSV (one row a metric)
is read too when printed with `--print-metric-name name` (by default ncu prints labels there). A
metric ncu did not give is shown as "-", never guessed; a profile without a CSV shows the first
error of ncu's log beside it (PROFILE.log, as scripts/ncu-profile writes it).

    bench/ncu_report.py PROFILE.csv [PROFILE.csv ...]     (the file's stem names the profile)
"""
import csv
import os
import re
import sys

# Units ncu prints (base units with --print-units base; scaled ones otherwise).
_SCALE = {"": 1.0, "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0, "ns": 1e-9, "us": 1e-6,
          "ms": 1e-3, "s": 1.0, "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12, "%": 1.0,
          "register/thread": 1.0, "cycle": 1.0, "inst": 1.0, "warp": 1.0}

DURATION = "gpu__time_duration.sum"
DRAM_PERCENT = ("gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",  # SpeedOfLight's, recent ncu
                "dram__throughput.avg.pct_of_peak_sustained_elapsed")
SM_PERCENT = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
DRAM_READ, DRAM_WRITE = "dram__bytes_read.sum", "dram__bytes_write.sum"
REGISTERS = "launch__registers_per_thread"
OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
# Warps stalled for a reason per issued instruction (WarpStateStats' measure of each reason).
_STALL = re.compile(r"^smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio$")


def number(text, unit=""):
    """A metric's value in base units (seconds, bytes), or None: ncu writes thousands with commas."""
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value * _SCALE.get(unit, 1.0)


def launches(path):
    """[(kernel name, {metric: (value text, unit)})] of one CSV, in the file's order."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    start = next((i for i, r in enumerate(rows) if "Kernel Name" in r and "ID" in r), None)
    if start is None:
        return []
    header = rows[start]
    column = {name: i for i, name in enumerate(header)}
    body = [r for r in rows[start + 1:] if len(r) == len(header)]
    if "Metric Name" in column:  # --page details: one row a metric
        found = {}
        for r in body:
            unit = r[column["Metric Unit"]] if "Metric Unit" in column else ""
            key = (r[column["ID"]], r[column["Kernel Name"]])
            found.setdefault(key, {})[r[column["Metric Name"]]] = (r[column["Metric Value"]], unit)
        return [(name, metrics) for (_, name), metrics in found.items()]
    units = body.pop(0) if body and body[0][column["ID"]] == "" else [""] * len(header)
    return [(r[column["Kernel Name"]], {name: (r[i], units[i]) for i, name in enumerate(header)}) for r in body]


def metric(metrics, names):
    """The first of `names` (one metric name, or alternatives in order) that ncu gave, or None."""
    for name in (names,) if isinstance(names, str) else names:
        if name in metrics:
            return number(*metrics[name])
    return None


def stalls(metrics, top=3):
    """The `top` stall reasons by warps stalled per issued instruction ('selected' is no stall)."""
    reasons = []
    for name, (text, unit) in metrics.items():
        match = _STALL.match(name)
        value = number(text, unit)
        if match and value is not None and match.group(1) != "selected":
            reasons.append((value, match.group(1)))
    reasons.sort(reverse=True)
    return ", ".join(f"{reason} {value:.2f}" for value, reason in reasons[:top]) or "-"


def shown(value, fmt):
    return "-" if value is None else format(value, fmt)


def function_of(kernel):
    """A demangled kernel name without its return type and parameter list (templates kept)."""
    name = kernel.strip()
    if name.endswith(")"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    return re.sub(r"^void ", "", name).strip()


def error_of(path):
    """ncu's first ==ERROR== line for a profile that holds no kernel (no hardware counters, say), from
    the CSV or the log beside it."""
    for candidate in (path, os.path.splitext(path)[0] + ".log"):
        try:
            with open(candidate) as f:
                found = next((l.strip() for l in f if l.startswith("==ERROR==")), None)
        except OSError:
            continue
        if found:
            return found
    return None


def row(profile, kernel, metrics):
    seconds = metric(metrics, DURATION)
    read, written = metric(metrics, DRAM_READ), metric(metrics, DRAM_WRITE)
    traffic = None if read is None or written is None else read + written
    rate = None if traffic is None or not seconds else traffic / seconds / 1e9
    name = function_of(kernel)
    return (f"| {profile} | `{name}` | {shown(None if seconds is None else seconds * 1e6, '.1f')} | "
            f"{shown(None if traffic is None else traffic / 1e6, '.1f')} | {shown(rate, '.0f')} | "
            f"{shown(metric(metrics, DRAM_PERCENT), '.1f')} | {shown(metric(metrics, SM_PERCENT), '.1f')} | "
            f"{shown(metric(metrics, REGISTERS), '.0f')} | {shown(metric(metrics, OCCUPANCY), '.1f')} | "
            f"{stalls(metrics)} |")


def main(paths):
    print("| profile | kernel | us | DRAM MB | DRAM GB/s | DRAM % of peak | SM % of peak | registers | "
          "achieved occupancy % | top stalls (warps per issue) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for path in paths:
        profile = os.path.splitext(os.path.basename(path))[0]
        found = launches(path) if os.path.exists(path) else []
        if not found:
            why = error_of(path) or ("no kernel in the profile" if os.path.exists(path) else
                                     "no profile: ncu did not finish, or did not run")
            print(f"| {profile} | ({why}) | - | - | - | - | - | - | - | - |")
        for kernel, metrics in found:
            print(row(profile, kernel, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
