#!/usr/bin/env python3
"""scripts/gpu-check's report: the device, each step's outcome, the tests, the sanitizers, the
interop check, a table that reads every performance goal of the CUDA backend off this run's
measurements (met or not), then the detailed tables of quantize_report.py, qgemm_report.py and
network_report.py, and Nsight Compute's view of each kernel when the `profile` phase ran
(ncu_report.py). Whatever a step did not produce is reported as missing, never guessed.

    bench/gpu_report.py STATE_DIR --name H200-2026-12-01 --out report.md
"""
import argparse
import json
import os
import re
import subprocess
import sys

from bench_json import load, microseconds, results

HERE = os.path.dirname(os.path.abspath(__file__))

# The goals as this script reads them; each names its peer, measured in the same run. Change a
# threshold here, and the report's table follows.
PIPELINE_COPY_FRACTION = 0.8  # quantize pipeline at 2^30 weights: >= this of the device copy's GB/s
SPEEDUP_NEEDED = 1.0          # "faster than the peer": peer time / nuq time above this
MLP_IMAGE_US = 10.0           # the quantized MNIST MLP, one image at a time: at most this per image

# The qgemm paths by benchmark family, as the goals name the fastest.
PATH_NAMES = {"BM_GpuQgemm": "streaming, FP32", "BM_GpuQgemmBf16": "BF16 X", "BM_GpuQgemmDequantCublas": "dequant + cuBLAS",
              "BM_GpuQgemmMma": "mma", "BM_GpuQgemmGemv": "GEMV"}


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def rows_of(path):
    """{(family, frozenset(arguments)): benchmark} of a Google Benchmark JSON, {} when absent."""
    if not os.path.exists(path):
        return {}
    try:
        return {(family, frozenset(fields.items())): b for family, fields, b in results(path)}
    except (ValueError, KeyError):
        return {}


def find(rows, family, **fields):
    for (f, args), b in rows.items():
        if f == family and all(dict(args).get(k) == v for k, v in fields.items()):
            return b
    return None


def goal(table, what, measured, target, met):
    table.append((what, measured, target, "-" if met is None else ("met" if met else "NOT met")))


def goals(state):
    """Every performance goal of the CUDA backend, from this run's JSON."""
    table = []
    quantize = rows_of(os.path.join(state, "bench_quantize.json"))
    torch = {}
    text = read(os.path.join(state, "torch_quantize.json"))
    if text:
        torch = {r["weights"]: r["ms"] for r in json.loads(text).get("runs", [])}
    sizes = sorted(dict(a)["weights"] for (f, a) in quantize if f == "BM_GpuPipeline")
    if sizes:
        b = find(quantize, "BM_GpuPipeline", weights=sizes[-1])
        fraction = b["GB/s"] / b["copy_GB/s"]
        goal(table, f"weight pipeline, 2^{sizes[-1].bit_length() - 1} weights, against the device copy",
             f"{b['GB/s']:.0f} / {b['copy_GB/s']:.0f} GB/s = {fraction:.2f}", f">= {PIPELINE_COPY_FRACTION}",
             fraction >= PIPELINE_COPY_FRACTION)
        both = [n for n in sizes if n in torch]  # every size is in the pipeline's table below
        if both:
            n = both[-1]
            ours = microseconds(find(quantize, "BM_GpuPipeline", weights=n)) / 1e3
            goal(table, f"weight pipeline, 2^{n.bit_length() - 1} weights, against PyTorch eager",
                 f"{torch[n]:.3f} / {ours:.3f} ms = {torch[n] / ours:.1f}x", f"> {SPEEDUP_NEEDED}x",
                 torch[n] / ours > SPEEDUP_NEEDED)
        else:
            goal(table, "weight pipeline against PyTorch eager", "PyTorch not measured", "", None)
    else:
        goal(table, "weight pipeline", "not measured", "", None)

    # The peers (copy, reads, cuBLAS) run as a step of their own before nuq's kernels (gpu-check).
    qgemm = {**rows_of(os.path.join(state, "bench_qgemm_peers.json")), **rows_of(os.path.join(state, "bench_qgemm.json"))}
    copy = find(qgemm, "BM_GpuCopy")
    reads = {dict(a)["bytes"]: b for (f, a), b in qgemm.items() if f == "BM_GpuRead"}

    def ceiling(n, k, bits):
        """What a kernel's code bytes are set against: a read of as many bytes where it was timed,
        else the 1 GiB device copy (whose size spreads launch and tail costs a small kernel pays)."""
        read = reads.get(n * k * bits // 8)
        if read:
            return "a read of as many bytes", read["GB/s"]
        return "the device copy", copy["GB/s"] if copy else None
    for m in (1, 16, 256, 1024):
        shape = dict(m=m, n=8192, k=8192)
        ours = [b for b in (find(qgemm, family, bits=2, **shape)
                            for family in ("BM_GpuQgemm", "BM_GpuQgemmBf16", "BM_GpuQgemmDequantCublas")) if b]
        if not ours:
            goal(table, f"qgemm 8192^2, m = {m}", "not measured", "", None)
            continue
        best = min(ours, key=microseconds)
        path = PATH_NAMES[best["run_name" if "run_name" in best else "name"].split("/")[0]]
        for peer in ("BM_CublasFp32", "BM_CublasBf16"):
            p = find(qgemm, peer, **shape)
            if p is None:
                goal(table, f"qgemm 8192^2, m = {m}, two-bit against {peer[3:]}", "peer not measured", "", None)
                continue
            speedup = microseconds(p) / microseconds(best)
            goal(table, f"qgemm 8192^2, m = {m}, two-bit against {peer[3:]}",
                 f"{microseconds(p):.1f} / {microseconds(best):.1f} us ({path}) = {speedup:.2f}x", f"> {SPEEDUP_NEEDED}x",
                 speedup > SPEEDUP_NEEDED)
        if m == 1024:  # #17's large-batch goals, for the faster of its paths
            for peer, needed in (("BM_CublasBf16", 0.7), ("BM_CublasFp32", 8.0)):
                p = find(qgemm, peer, **shape)
                if p is not None:
                    ratio = microseconds(p) / microseconds(best)
                    goal(table, f"large-batch qgemm 8192^2, m = 1024, two-bit against {peer[3:]}",
                         f"{microseconds(p):.1f} / {microseconds(best):.1f} us ({path}) = {ratio:.2f}x", f">= {needed}x",
                         ratio >= needed)
        against, bound = ceiling(8192, 8192, 2)
        if m == 1 and bound:
            goal(table, f"qgemm 8192^2, m = 1, weight bytes against {against}",
                 f"{best['GB/s']:.0f} / {bound:.0f} GB/s ({path}) = {best['GB/s'] / bound:.2f}", "(reported)", None)

    # #17's goals for its small-batch kernels at two bits, 8192^2: the fragment-order mma kernel
    # (BM_GpuQgemmMma, m <= 64) and the CUDA-core GEMV (BM_GpuQgemmGemv, m <= 4). A peer of None
    # is the device copy (the code bytes' GB/s against it); a target of None is reported only.
    checks = (("BM_GpuQgemmMma", "mma", ((1, None, 0.8), (1, "BM_CublasFp32", 12.0), (1, "BM_CublasBf16", 6.0),
                                         (16, "BM_CublasBf16", 5.0), (64, "BM_CublasBf16", 2.5))),
              ("BM_GpuQgemmGemv", "GEMV", ((1, None, 0.8), (1, "BM_CublasFp32", 12.0), (1, "BM_CublasBf16", 6.0),
                                           (4, None, None))))
    for family, label, cases in checks:
        for m, peer, needed in cases:
            b = find(qgemm, family, m=m, n=8192, k=8192, bits=2)
            what = f"{label} qgemm 8192^2, m = {m}, two-bit"
            if b is None:
                goal(table, what, "not measured", "", None)
            elif peer is None:
                against, bound = ceiling(8192, 8192, 2)
                if bound:
                    fraction = b["GB/s"] / bound
                    goal(table, what + f", code bytes against {against}",
                         f"{b['GB/s']:.0f} / {bound:.0f} GB/s = {fraction:.2f}",
                         "(reported)" if needed is None else f">= {needed}", None if needed is None else fraction >= needed)
            else:
                p = find(qgemm, peer, m=m, n=8192, k=8192)
                if p is None:
                    goal(table, what + f" against {peer[3:]}", "peer not measured", "", None)
                else:
                    speedup = microseconds(p) / microseconds(b)
                    goal(table, what + f" against {peer[3:]}",
                         f"{microseconds(p):.1f} / {microseconds(b):.1f} us = {speedup:.2f}x", f">= {needed}x",
                         speedup >= needed)

    network = rows_of(os.path.join(state, "bench_network.json"))
    for batch, images, what in ((10000, 10000, "MNIST MLP, 10,000 images in one batch"),
                                (1000, 10000, "MNIST MLP, 10,000 images in batches of 1,000"),
                                (1, 1000, "MNIST MLP, one image per launch (1,000 launches in flight)")):
        fp32 = find(network, "BM_GpuMlp", bits=0, batch=batch, images=images)
        # Every two-bit variant: BF16 tensor cores or not, a cluster of SMs per batch or not.
        two = [b for (f, args), b in network.items()
               if f == "BM_GpuMlp" and dict(args).get("bits") == 2 and dict(args).get("batch") == batch
               and dict(args).get("images") == images]
        if fp32 is None or not two:
            goal(table, what, "not measured", "", None)
            continue
        us = lambda b: microseconds(b) / images
        best = min(two, key=us)
        goal(table, what + ", two-bit against cuBLAS FP32",
             f"{us(fp32):.3f} / {us(best):.3f} us per image = {us(fp32) / us(best):.2f}x", f"> {SPEEDUP_NEEDED}x",
             us(fp32) / us(best) > SPEEDUP_NEEDED)
        if batch == 1:  # launches back to back on the device's queue: a throughput, not one image's latency
            goal(table, "MNIST MLP, two-bit, time per image at one image per launch", f"{us(best):.2f} us",
                 f"<= {MLP_IMAGE_US} us",
                 us(best) <= MLP_IMAGE_US)
    return table


def gvisor(kernel):
    """gVisor's sandbox reports Linux 4.4.0 (the device library's KINDS.md)."""
    return re.search(r"\b4\.4\.0\b", kernel) is not None


def test_summary(text):
    """Counts and the failed tests from gtest's console output (present even when a time limit
    killed the run before gtest wrote its JSON)."""
    ok = re.findall(r"^\[       OK \] (\S+)", text, re.M)
    failed = sorted(set(re.findall(r"^\[  FAILED  \] (\S+\.\S+?)(?: \(|,|$)", text, re.M)))
    skipped = sorted(set(re.findall(r"^\[  SKIPPED \] (\S+\.\S+)", text, re.M)))
    return ok, failed, skipped


def section(title, body):
    print(f"## {title}\n\n{body.rstrip()}\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("state")
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    a = parser.parse_args()
    s = a.state
    sys.stdout = open(a.out, "w")
    print(f"# nuq on the GPU: {a.name}\n\nWritten by scripts/gpu-check from the bundle of scripts/gpu-bundle; raw JSON "
          f"beside this file ({a.name}-*.json).\n")
    devices = read(os.path.join(s, "devices.json"))
    facts = "```\n" + (read(os.path.join(s, "nvidia-smi.txt")) or "nvidia-smi: not run\n") + "```\n"
    try:
        listing = json.loads(devices)
    except (TypeError, ValueError):
        listing = None
    listing = listing if isinstance(listing, dict) else {}
    try:
        d = listing["devices"][0]
        facts += (f"\n{d['name']}, compute capability {d['compute_capability']}, {d['multiprocessors']} SMs, "
                  f"L2 {d['l2_bytes'] / 2**20:.0f} MiB, {d['global_memory_bytes'] / 2**30:.0f} GiB, peak memory bandwidth "
                  f"{d['peak_bandwidth_gbs']:.0f} GB/s ({d['memory_bus_bits']}-bit bus at {d['memory_clock_khz'] / 1e3:.0f} MHz), "
                  f"SM clock up to {d['sm_clock_khz'] / 1e3:.0f} MHz.\n")
    except (TypeError, ValueError, KeyError, IndexError):
        facts += "\n(no device facts from `nuq devices --json`)\n"
    # cuBLAS is opened on first use; `nuq devices` opens it and says which it found.
    facts += (f"\ncuBLAS {listing['cublas']}.\n" if "cublas" in listing
              else f"\ncuBLAS not loaded: {listing.get('cublas_error', 'not reported')}.\n")
    kernel = (read(os.path.join(s, "kernel.txt")) or "").strip()
    if kernel:
        facts += f"\nHost kernel: `{kernel}`" + (" (gVisor: no compute-sanitizer, no hardware counters for ncu)"
                                                 if gvisor(kernel) else "") + ".\n"
    section("Device", facts)
    steps = read(os.path.join(s, "steps.txt")) or ""
    section("Steps", "| step | outcome | seconds |\n|---|---|---:|\n" + "".join(
        f"| {p[0]} | {' '.join(p[1:-1])} | {p[-1].rstrip('s')} |\n" for p in (l.split() for l in steps.splitlines()) if len(p) >= 3))
    errors = []
    for name in ("bench_qgemm_peers", "bench_qgemm", "bench_quantize", "bench_network"):
        path = os.path.join(s, f"{name}.json")
        try:
            benchmarks = load(path).get("benchmarks", []) if os.path.exists(path) else []
        except ValueError:
            benchmarks = []
        errors += [f"- {name} {b.get('name')}: {b.get('error_message', '')}" for b in benchmarks if b.get("error_occurred")]
    if errors:
        section("Benchmarks skipped with an error", "\n".join(errors))
    rows = goals(s)
    section("Performance goals (this run's measurements; peers timed in the same run; the products and the "
            "pipeline from a cold L2 and checked against a host reference)",
            "| goal | measured | target | |\n|---|---|---|---|\n" + "".join(f"| {w} | {m} | {t} | {r} |\n" for w, m, t, r in rows))
    parts = [read(os.path.join(s, f"{name}.txt")) for name in ("gpu-tests", "gpu-tests-heavy")]
    text = None if all(p is None for p in parts) else "\n".join(p for p in parts if p is not None)
    if text is None:
        section("Tests", "not run")
    else:
        ok, failed, skipped = test_summary(text)
        section("Tests", f"{len(ok)} passed, {len(failed)} failed, {len(skipped)} skipped" +
                "".join(f"\n- FAILED {t}" for t in failed) + "".join(f"\n- skipped {t}" for t in skipped))
    lines = []
    for tool in ("memcheck", "racecheck", "initcheck", "synccheck"):
        log = read(os.path.join(s, f"sanitize-{tool}.txt"))
        summary = re.findall(r"ERROR SUMMARY: .*", log or "")
        outcome = next((l.split()[1:] for l in steps.splitlines() if l.startswith(f"sanitize-{tool} ")), ["not run"])
        if "Device not supported" in (log or ""):  # (whatever summary follows the refusal)
            said = "the runtime refused the device (\"Device not supported\"): not a finding about the kernels"
        else:
            said = summary[-1] if summary else "no summary"
        lines.append(f"- {tool}: {' '.join(outcome)}; {said}")
    section("compute-sanitizer (small shapes of every kernel path)", "\n".join(lines))
    interop = read(os.path.join(s, "interop.json"))
    section("PyTorch interop", "```json\n" + interop.rstrip() + "\n```" if interop else "not run")
    pytest = read(os.path.join(s, "python-tests.txt"))
    if pytest is None:
        section("The Python package on the machine's python3 (pytest)", "not run")
    else:
        summary = [l for l in pytest.splitlines() if re.search(r"\b(passed|failed|error|skipped)\b.* in [0-9.]+s", l)]
        notes = [l for l in pytest.splitlines() if l.startswith(("FAILED", "ERROR", "SKIPPED"))]
        section("The Python package on the machine's python3 (pytest)",
                (summary[-1].strip("= ") if summary else "no summary (see python-tests.txt)") +
                "".join(f"\n- {l}" for l in notes))
    checkpoint = read(os.path.join(s, "checkpoint.json"))
    section("A sharded checkpoint streamed through the device (`nuq quantize --device cuda` against `--device cpu`)",
            "```json\n" + checkpoint.rstrip() + "\n```" if checkpoint else "not run")
    for title, script, args in (
            ("Weight pipeline (bench_quantize; PyTorch eager peer)", "quantize_report.py",
             ["bench_quantize.json", "torch_quantize.json"]),
            ("Quantized GEMM (bench_qgemm)", "qgemm_report.py", ["bench_qgemm.json", "bench_qgemm_peers.json"]),
            ("Every qgemm path at the LLM layers (bench_qgemm, the `speed` phase)", "qgemm_report.py",
             ["bench_qgemm_speed.json", "bench_qgemm_speed_peers.json"]),
            ("The MNIST MLP, FP32 against two-bit (bench_network, device-resident)", "network_report.py",
             ["bench_network.json"])):
        paths = [os.path.join(s, f) for f in args if os.path.exists(os.path.join(s, f))]
        if not paths or not paths[0].endswith(args[0]):
            if "speed" not in args[0]:  # a phase of its own: absent unless asked for
                section(title, "not measured")
            continue
        run = subprocess.run([sys.executable, os.path.join(HERE, script), *paths], capture_output=True, text=True)
        body = re.sub(r"^## ", "### ", run.stdout, flags=re.M)  # their sections sit under this one
        section(title, body + (f"\n(report failed: {run.stderr.strip()})" if run.returncode else ""))
    profiles = os.path.join(s, "profile")
    if os.path.isdir(profiles):  # the `profile` phase, when it ran on this machine
        # Every profile scripts/ncu-profile began leaves its log; a CSV only where ncu finished.
        stems = {os.path.splitext(f)[0] for f in os.listdir(profiles) if f.endswith((".csv", ".log"))}
        csvs = [os.path.join(profiles, stem + ".csv") for stem in sorted(stems)]
        run = subprocess.run([sys.executable, os.path.join(HERE, "ncu_report.py"), *csvs], capture_output=True, text=True)
        section("Nsight Compute, one launch of each kernel at a goal shape (scripts/ncu-profile)",
                run.stdout + (f"\n(report failed: {run.stderr.strip()})" if run.returncode else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
