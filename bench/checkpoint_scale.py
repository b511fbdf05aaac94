#!/usr/bin/python3
"""The numbers behind bench/checkpoint_scale.sh, which calls it these ways:

  checkpoint_scale.py read-rate FILE...       cold and warm read rates of the shards (JSON on stdout)
  checkpoint_scale.py read-again JSON FILE... one more cold pass (after nuq's cold run) into JSON
  checkpoint_scale.py evict FILE...           drop the files from the page cache (nuq then reads cold)
  checkpoint_scale.py record DIR I --status S --start T0 --end T1 --given ARG --output PATH -- FILE...
                                              DIR/nuq-I.json from nuq's run: GNU time's numbers,
                                              nuq's report, the sizes of the shard FILEs it read
                                              (ARG: what it was given) and of its output
  checkpoint_scale.py summarize --nuq NUQ --options OPTS --out PREFIX [--save PREFIX] -- RUNDIR...
                                              PREFIX.json and PREFIX.md (the Markdown also on stdout)

Standard library only. Sizes are decimal (1 GB = 10^9 bytes) except RSS, in MiB/GiB as the goal
states it.
"""
import argparse
import datetime
import json
import mmap
import os
import platform
import shutil
import subprocess
import sys
import time

BLOCK = 16 << 20          # read buffer: large enough that per-call overhead vanishes
AHEAD = 64 << 20          # the advised read's distance ahead (nuq's kReadAheadBytes)
WARM_SECONDS = 1.0        # warm passes repeat until this long: one pass of 200 MB is ~30 ms
GIB, MIB, GB = 1 << 30, 1 << 20, 10**9
RSS_LIMIT = 1 * GIB       # issue #18: peak RSS <= 1 GiB ...
RATE_MIN = 0.70           # ... at >= 70 % of the read rate of the same files (warm, or cold with --cold) ...
RSS_GROWTH_MAX = 1.25     # ... and "independent of size": at most 25 % more at the largest size


# ---- read-rate ---------------------------------------------------------------------------------

def read_pass(paths, buffer, advise=False):
    """Bytes and seconds to read every file through the buffer; with `advise`, the kernel told to
    read AHEAD bytes beyond each block (POSIX_FADV_WILLNEED, as nuq does), which keeps more of a
    disk's queue busy than the kernel's own read-ahead does."""
    total, start = 0, time.perf_counter()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            if advise:
                os.posix_fadvise(fd, 0, AHEAD, os.POSIX_FADV_WILLNEED)
            while n := os.readv(fd, [buffer]):
                if advise:
                    os.posix_fadvise(fd, total + AHEAD, len(buffer), os.POSIX_FADV_WILLNEED)
                total += n
        finally:
            os.close(fd)
    return total, time.perf_counter() - start


def evict(paths):
    """Drops these files' pages from the page cache (written back first: dirty pages would stay),
    so that the next read comes from the disk. Nothing else in the cache is disturbed, unlike
    /proc/sys/vm/drop_caches on a machine others share."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_bytes(paths):
    """Bytes of the files in the page cache now (util-linux's fincore), or None without it."""
    if not shutil.which("fincore"):
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *paths],
                         capture_output=True, text=True)
    return sum(int(v) for v in out.stdout.split()) if out.returncode == 0 else None


def largest_tensor(paths):
    """The largest tensor's bytes, from the headers: what a tensor-at-a-time quantizer holds."""
    largest = 0
    for path in paths:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        header.pop("__metadata__", None)
        largest = max([largest] + [t["data_offsets"][1] - t["data_offsets"][0] for t in header.values()])
    return largest


def cold_rate(paths, buffer, advise):
    evict(paths)
    n, seconds = read_pass(paths, buffer, advise)
    return {"seconds": seconds, "gbps": n / seconds / GB, "advised": advise}


def read_rate(paths):
    """The cold rate, the faster of a plain pass and an advised one (read_pass), each after
    evicting the files (`cached_before_bytes` says how cold the first was), and the warm rate (the
    passes after them, for at least WARM_SECONDS)."""
    evict(paths)
    result = {"files": [{"file": os.path.basename(p), "bytes": os.path.getsize(p)} for p in paths],
              "block_bytes": BLOCK, "largest_tensor_bytes": largest_tensor(paths),
              "cached_before_bytes": cached_bytes(paths), "load_before": os.getloadavg()}
    total = sum(f["bytes"] for f in result["files"])
    result["bytes"] = total
    buffer = mmap.mmap(-1, BLOCK)
    buffer.write(bytes(BLOCK))  # touched once, so no pass pays its page faults
    n, seconds = read_pass(paths, buffer)
    assert n == total, f"read {n} bytes of {total}"
    result["cold_plain"] = {"seconds": seconds, "gbps": total / seconds / GB, "advised": False}
    result["cold_advised"] = cold_rate(paths, buffer, True)
    result["cold"] = max(result["cold_plain"], result["cold_advised"], key=lambda r: r["gbps"])
    passes, seconds = 0, 0.0
    while passes == 0 or seconds < WARM_SECONDS:
        seconds += read_pass(paths, buffer)[1]
        passes += 1
    result["warm"] = {"seconds": seconds, "passes": passes, "gbps": passes * total / seconds / GB}
    result["cached_after_bytes"] = cached_bytes(paths)
    return result


def read_again(read_json, paths):
    """Adds a cold advised pass, taken after nuq's cold run, to READ_JSON: the disk's rate drifts
    (0.5-1.9 GB/s here on one day), so nuq's cold run is bracketed, and `cold` stays the fastest."""
    buffer = mmap.mmap(-1, BLOCK)
    buffer.write(bytes(BLOCK))
    with open(read_json) as f:
        result = json.load(f)
    result["cold_after"] = cold_rate(paths, buffer, True)
    result["cold"] = max((result[k] for k in ("cold_plain", "cold_advised", "cold_after") if k in result),
                         key=lambda r: r["gbps"])
    with open(read_json, "w") as f:
        json.dump(result, f, indent=2)


# ---- record ------------------------------------------------------------------------------------

def gnu_time(path):
    """The `/usr/bin/time -v` report as {field: text}, e.g. 'Maximum resident set size (kbytes)'."""
    fields = {}
    with open(path) as f:
        for line in f:
            if ": " in line:
                key, value = line.strip().rsplit(": ", 1)
                fields[key] = value
    return fields


def tree_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def record(args):
    stem = os.path.join(args.dir, f"nuq-{args.index}")
    t = gnu_time(stem + ".time")
    try:
        with open(stem + ".out") as f:
            report = json.load(f)
    except (OSError, ValueError):
        report = None
    with open(stem + ".err") as f:
        errors = f.read()
    value = {"given": args.given, "input_bytes": sum(os.path.getsize(p) for p in args.files),
             "status": args.status, "wall_s": args.end - args.start,
             "max_rss_kib": int(t.get("Maximum resident set size (kbytes)", 0)),
             "user_s": float(t.get("User time (seconds)", "nan")), "sys_s": float(t.get("System time (seconds)", "nan")),
             "cpu_percent": t.get("Percent of CPU this job got"), "major_faults": int(t.get(
                 "Major (requiring I/O) page faults", 0)),
             "output_bytes": tree_bytes(args.output) if os.path.exists(args.output) else 0,
             "tensors": len(report["tensors"]) if isinstance(report, dict) and "tensors" in report else None,
             "statistics_s": report.get("statistics_seconds") if isinstance(report, dict) else None,
             "quantize_s": report.get("quantize_seconds") if isinstance(report, dict) else None,
             "stderr": errors[-2000:], "load_after": os.getloadavg()}
    with open(stem + ".json", "w") as f:
        json.dump(value, f, indent=2)


# ---- summarize ---------------------------------------------------------------------------------

def load(path):
    with open(path) as f:
        return json.load(f)


def size_run(rundir):
    """One size's numbers: the read rates, nuq's runs added up (per shard: times summed, RSS the
    largest), and the ratios the goal is stated in."""
    run, read = load(os.path.join(rundir, "run.json")), load(os.path.join(rundir, "read.json"))
    runs = [load(os.path.join(rundir, n)) for n in sorted(os.listdir(rundir), key=lambda n: (len(n), n))
            if n.startswith("nuq-") and n.endswith(".json")]
    ok = bool(runs) and all(r["status"] == 0 for r in runs) and len(runs) == (len(run["shards"]) if
                                                                            run["mode"] == "per-shard" else 1)
    wall = sum(r["wall_s"] for r in runs)
    rss = max((r["max_rss_kib"] * 1024 for r in runs), default=0)
    nuq = {"ok": ok, "runs": len(runs), "wall_s": wall, "user_s": sum(r["user_s"] for r in runs),
           "sys_s": sum(r["sys_s"] for r in runs), "max_rss_bytes": rss,
           "rss_over_run_input": max((r["max_rss_kib"] * 1024 / r["input_bytes"] for r in runs), default=None),
           "output_bytes": sum(r["output_bytes"] for r in runs), "major_faults": sum(r["major_faults"] for r in runs),
           "status": [r["status"] for r in runs],
           # nuq's own split of its time: the statistics pass, the quantizing pass (None before they were reported)
           "statistics_s": sum(r["statistics_s"] for r in runs) if runs and all(r.get("statistics_s") is not None for r in runs) else None,
           "quantize_s": sum(r["quantize_s"] for r in runs) if runs and all(r.get("quantize_s") is not None for r in runs) else None, "stderr": next((r["stderr"] for r in runs if r["status"]), ""),
           "load_after": runs[-1]["load_after"] if runs else None}
    out = {"size_gb": run["size_gb"], "mode": run["mode"], "cache": run["cache"], "checkpoint": run["checkpoint"],
           "shards": len(run["shards"]),
           "input_bytes": read["bytes"], "largest_shard_bytes": max(f["bytes"] for f in read["files"]),
           "largest_tensor_bytes": read["largest_tensor_bytes"], "read": read, "nuq": nuq}
    if ok and wall > 0:
        out["nuq_gbps"] = read["bytes"] / wall / GB
        out["ratio_to_read"] = {k: out["nuq_gbps"] / read[k]["gbps"] for k in ("cold", "warm")}
        out["output_ratio"] = nuq["output_bytes"] / read["bytes"]
    generated = os.path.join(rundir, "generate.time")
    if os.path.exists(generated):  # generated in this run: the generator's own bounded memory
        t = gnu_time(generated)
        out["generate"] = {"max_rss_kib": int(t["Maximum resident set size (kbytes)"]),
                           "elapsed": t["Elapsed (wall clock) time (h:mm:ss or m:ss)"]}
    return out


def verdict(sizes):
    good = [s for s in sizes if s["nuq"]["ok"]]
    v = {"rss_within_limit": {str(s["size_gb"]): s["nuq"]["max_rss_bytes"] <= RSS_LIMIT for s in good},
         "rate_at_least_min": {str(s["size_gb"]): s["ratio_to_read"][s["cache"]] >= RATE_MIN for s in good}}
    if len(good) >= 2:
        small, big = min(good, key=lambda s: s["input_bytes"]), max(good, key=lambda s: s["input_bytes"])
        growth = big["nuq"]["max_rss_bytes"] / small["nuq"]["max_rss_bytes"]
        v["rss_growth"] = {"from_gb": small["size_gb"], "to_gb": big["size_gb"], "factor": growth,
                           "mib_per_gb": (big["nuq"]["max_rss_bytes"] - small["nuq"]["max_rss_bytes"]) / MIB
                           / ((big["input_bytes"] - small["input_bytes"]) / GB),
                           "independent": growth <= RSS_GROWTH_MAX}
    v["met"] = (len(good) == len(sizes) and "rss_growth" in v and v["rss_growth"]["independent"]
                and all(v["rss_within_limit"].values()) and all(v["rate_at_least_min"].values()))
    return v


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_bytes": memory, "kernel": platform.release()}


def git_head():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or None


def markdown(s):
    f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"
    rows = ["| size GB | mode | nuq reads | shards | input MB | largest shard MB | read GB/s cold / warm | nuq s "
            "| passes s (statistics + quantizing) | CPU s | nuq GB/s | ÷ read rate (same cache) | peak RSS MiB | RSS ÷ input of a run | output MB | exit |",
            "|---:|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in s["sizes"]:
        read, nuq = r["read"], r["nuq"]
        ok = nuq["ok"] or None  # a failed run's time, RSS and output say nothing of the goal
        rows.append(" | ".join([
            f"| {r['size_gb']}", r["mode"], r["cache"], str(r["shards"]), f"{r['input_bytes'] / 1e6:.0f}",
            f"{r['largest_shard_bytes'] / 1e6:.0f}", f"{f(read['cold']['gbps'])} / {f(read['warm']['gbps'])}",
            f(ok and nuq["wall_s"], 1),
            f"{f(ok and nuq.get('statistics_s'))} + {f(ok and nuq.get('quantize_s'))}",
            f(ok and nuq["user_s"] + nuq["sys_s"], 1), f(r.get("nuq_gbps"), 3),
            f(r.get("ratio_to_read", {}).get(r["cache"]), 3), f(ok and nuq["max_rss_bytes"] / MIB, 0),
            f(ok and nuq["rss_over_run_input"]), f(ok and nuq["output_bytes"] / 1e6, 1),
            f"{','.join(map(str, nuq['status'])) or '-'} |"]))
    v, m = s["verdict"], s["machine"]
    lines = [f"# nuq quantize on synthetic Llama BF16 checkpoints ({s['date']})", "",
             f"{m['cpu']}, {m['cores']} cores, {m['memory_bytes'] / GIB:.0f} GiB; nuq `{s['nuq']}` "
             f"(tree {s['git_head']}), options `{s['nuq_options'] or '(none)'}`; checkpoints from "
             "`scripts/make-llm-checkpoint --size-gb N`.", "", *rows, "",
             f"Goal (issue #18): peak RSS ≤ {RSS_LIMIT / GIB:.0f} GiB, nuq's rate ≥ {RATE_MIN:.0%} of the read rate "
             f"of the same files with the cache as nuq found it (warm unless --cold), peak RSS growing "
             f"≤ {RSS_GROWTH_MAX}× from the smallest to the largest size.", ""]
    for name, checks in (("RSS within limit", v["rss_within_limit"]), ("rate ≥ minimum", v["rate_at_least_min"])):
        lines.append(f"- {name}: " + (", ".join(f"{k} GB {'yes' if ok else 'no'}" for k, ok in checks.items()) or "no run"))
    if "rss_growth" in v:
        g = v["rss_growth"]
        lines.append(f"- RSS from {g['from_gb']} to {g['to_gb']} GB: ×{g['factor']:.2f} ({g['mib_per_gb']:.0f} MiB "
                     f"per GB): {'independent' if g['independent'] else 'grows'}")
    lines += [f"- **goal {'met' if v['met'] else 'not met'}**", "",
              "Read rates: the same shard files, in this run, just before nuq, read in 16 MiB blocks: cold is the "
              "fastest of a plain pass and one with read-ahead advice (`POSIX_FADV_WILLNEED` 64 MiB ahead, as nuq "
              "reads), each after evicting them from the page cache (`cached_before_bytes` in the JSON says how "
              "much stayed), and with --cold a third such pass after nuq's run (the disk's rate drifts); warm is "
              f"the passes after them (repeated for at least {WARM_SECONDS:g} s). nuq then reads them "
              "warm, or cold when run with --cold (evicted again first). Wall times include process start; CPU s "
              "is user + system time; per-shard mode sums one run per shard and takes the largest RSS. Load "
              "averages before and after each run are in the JSON (other jobs share the cores)."]
    failed = [r for r in s["sizes"] if not r["nuq"]["ok"]]
    lines += [f"\n{r['size_gb']} GB: nuq failed: `{r['nuq']['stderr'].strip()[:300]}`" for r in failed]
    return "\n".join(lines) + "\n"


def summarize(args):
    sizes = [size_run(d) for d in args.rundirs]
    s = {"date": datetime.date.today().isoformat(), "machine": machine(), "git_head": git_head(), "nuq": args.nuq,
         "nuq_options": args.options, "goal": {"rss_limit_bytes": RSS_LIMIT, "rate_min": RATE_MIN,
                                               "rss_growth_max": RSS_GROWTH_MAX},
         "sizes": sizes, "verdict": verdict(sizes)}
    text = markdown(s)
    for prefix in filter(None, (args.out, args.save)):
        with open(prefix + ".json", "w") as f:
            json.dump(s, f, indent=2)
            f.write("\n")
        with open(prefix + ".md", "w") as f:
            f.write(text)
    sys.stdout.write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("read-rate", "evict"):
        sub.add_parser(name).add_argument("files", nargs="+")
    a = sub.add_parser("read-again")
    a.add_argument("read_json")
    a.add_argument("files", nargs="+")
    c = sub.add_parser("record")
    c.add_argument("dir")
    c.add_argument("index")
    c.add_argument("--status", type=int, required=True)
    c.add_argument("--start", type=float, required=True)
    c.add_argument("--end", type=float, required=True)
    c.add_argument("--given", required=True)
    c.add_argument("--output", required=True)
    c.add_argument("files", nargs="+")
    s = sub.add_parser("summarize")
    s.add_argument("--nuq", required=True)
    s.add_argument("--options", default="")
    s.add_argument("--out", required=True)
    s.add_argument("--save")
    s.add_argument("rundirs", nargs="+")
    args = p.parse_args()
    if args.command == "read-rate":
        json.dump(read_rate(args.files), sys.stdout, indent=2)
    elif args.command == "evict":
        evict(args.files)
    elif args.command == "read-again":
        read_again(args.read_json, args.files)
    elif args.command == "record":
        record(args)
    else:
        summarize(args)


if __name__ == "__main__":
    main()
