#!/usr/bin/env python3
"""bench_qgemm's JSON as Markdown: per layer and batch, nuq's time, TFLOP/s, GB/s of weight bytes
and, on the GPU, that as a fraction of the device copy's bandwidth measured in the same run
(BM_GpuCopy, read + write), of a kernel's read of as many bytes, launch and tail included
(BM_GpuRead, where it was timed at the case's code bytes) and of the device's peak (from its
clocks, in the JSON's context), and
the speed-up over each peer timed in the same run (cuBLAS FP32, TF32, BF16; OpenBLAS on the CPU);
then every GPU path side by side per case, the fastest of each arithmetic and the dispatch by
width and batch that this run's measurements choose.

    bench/qgemm_report.py bench_qgemm.json [more.json ...] > table.md
"""
import argparse
from collections import Counter, defaultdict

from bench_json import context, microseconds, results

# Every GPU path of qgemm bench_qgemm times, by the arithmetic it does: the dispatch chooses
# within one (a caller who asked for FP32 gets FP32), so each group has its own winner.
GPU_PATHS = {
    "FP32": [("BM_GpuQgemm", "streaming"), ("BM_GpuQgemmGemv", "GEMV")],
    "BF16 operands": [("BM_GpuQgemmBf16", "BF16 tiles"), ("BM_GpuQgemmMma", "mma"),
                      ("BM_GpuQgemmDequantCublas", "dequant + cuBLAS")],
}


def dispatch(rows):
    """Every measured path side by side per case, the fastest of each arithmetic, and per width and
    batch the path that won most layers: the dispatch by shape as this run measured it (#17)."""
    us = microseconds
    cases = sorted({(k[2], k[3], k[4], k[1]) for k in rows
                    if any(k[0] == family for paths in GPU_PATHS.values() for family, _ in paths)})
    if not cases:
        return
    print("## GPU, every path per case (the dispatch as measured)\n")
    names = [(group, family, label) for group, paths in GPU_PATHS.items() for family, label in paths]
    print("| n x k | bits | m | " + " | ".join(f"{label} us" for _, _, label in names) + " | fastest FP32 | "
          "fastest BF16 | BF16 vs CublasBf16 | FP32 vs CublasFp32 |")
    print("|---|---:|---:|" + "---:|" * len(names) + "---|---|---:|---:|")
    wins = {group: defaultdict(Counter) for group in GPU_PATHS}
    for n, k, bits, m in cases:
        times = {family: us(rows[(family, m, n, k, bits)]) for _, family, _ in names if (family, m, n, k, bits) in rows}
        line = f"| {n} x {k} | {bits} | {m} | " + " | ".join(
            f"{times[family]:.1f}" if family in times else "-" for _, family, _ in names) + " |"
        best = {}
        for group, paths in GPU_PATHS.items():
            measured = [(times[family], label) for family, label in paths if family in times]
            if measured:
                best[group] = min(measured)
            if len(measured) > 1:  # a path measured alone decides nothing
                wins[group][(bits, m)][best[group][1]] += 1
            line += f" {best[group][1] if group in best else '-'} |"
        for group, peer in (("BF16 operands", "BM_CublasBf16"), ("FP32", "BM_CublasFp32")):
            other = rows.get((peer, m, n, k, None))
            line += f" {us(other) / best[group][0]:.2f}x |" if other and group in best else " - |"
        print(line)
    print("\nWins per arithmetic, width and batch, over the layers where two or more of its paths were "
          "measured:\n")
    for group, counted in wins.items():
        print(f"- {group}: " + ("; ".join(
            f"{bits}-bit m = {m}: " + ", ".join(f"{label} {count}/{sum(c.values())}" for label, count in c.most_common())
            for (bits, m), c in sorted(counted.items())) or "no case with two paths measured"))
    print()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("json", nargs="+", help="one run's files (its steps' JSON, read as one)")
    args = parser.parse_args()
    rows, reads = {}, {}
    for path in args.json:
        for family, fields, b in results(path):
            if family == "BM_GpuRead":  # keyed by its bytes: the code bytes of a layer and width
                reads[fields.get("bytes")] = b["GB/s"]
                continue
            rows[(family, fields.get("m"), fields.get("n"), fields.get("k"), fields.get("bits"))] = b
    us = microseconds
    peak = next((float(c["gpu_peak_bandwidth_gbs"]) for c in map(context, args.json) if "gpu_peak_bandwidth_gbs" in c),
                float("nan"))
    copy = next((b["GB/s"] for (family, *_), b in rows.items() if family == "BM_GpuCopy"), float("nan"))
    if any(k[0].startswith("BM_Gpu") for k in rows):
        print(f"Device copy {copy:.0f} GB/s (read + write, this run); peak {peak:.0f} GB/s (the device's clocks)." +
              ("" if not reads else " A kernel reading a case's code bytes, cold: " + ", ".join(
                  f"{n / 2**20:.0f} MiB {gbs:.0f} GB/s" for n, gbs in sorted(reads.items())) + ".") + "\n")
    for ours, peers, title in (
        ("BM_GpuQgemm", ["BM_CublasFp32", "BM_CublasTf32", "BM_CublasBf16"], "GPU, the default kernels, X in FP32"),
        ("BM_GpuQgemmBf16", ["BM_CublasFp32", "BM_CublasTf32", "BM_CublasBf16"],
         "GPU, X in BF16 (as the cuBLAS BF16 peer): the streaming kernel up to m = 16, tensor-core tiles above"),
        ("BM_QuantizedGemmPrepared", ["BM_OpenBlasSgemm"], "CPU, weights prepared once (as a network uses them)"),
        ("BM_QuantizedGemm", ["BM_OpenBlasSgemm"], "CPU, from the stored codes on every call"),
        ("BM_QuantizedGemmPerChannelUniform", ["BM_OpenBlasSgemm"],
         "CPU, a table per row on a uniform grid each (a uniform design per channel), prepared once"),
        ("BM_QuantizedGemmPerChannelTables", ["BM_OpenBlasSgemm"],
         "CPU, a table per row of a non-uniform design (per channel), prepared once"),
        ("BM_GroupedQgemmPrepared", ["BM_OpenBlasSgemm"], "CPU, groups of 128, prepared once (as Python keeps them)"),
        ("BM_GroupedQgemm", ["BM_OpenBlasSgemm"], "CPU, groups of 128, from the stored codes on every call"),
    ):
        keys = sorted((k for k in rows if k[0] == ours), key=lambda k: (k[2], k[3], k[4], k[1]))
        if not keys:
            continue
        print(f"## {title}\n")
        names = [p.replace("BM_", "") for p in peers]
        gpu = ours.startswith("BM_Gpu")  # fractions of the memory's bandwidth: the GPU's rows only
        print("| n x k | m | bits | nuq us | TFLOP/s | weight GB/s |" + (" % copy | % read | % peak |" if gpu else "") +
              " " + " | ".join(f"vs {n}" for n in names) + " |")
        print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if gpu else "") + "---:|" * len(peers))
        for key in keys:
            b = rows[key]
            line = f"| {key[2]} x {key[3]} | {key[1]} | {key[4]} | {us(b):.1f} | {b['TFLOP/s']:.2f} | {b['GB/s']:.0f} |"
            if gpu:
                read = reads.get(key[2] * key[3] * key[4] // 8) if key[4] else None  # (the layers' k are whole bytes)
                line += (f" {100 * b['GB/s'] / copy:.0f} | " + (f"{100 * b['GB/s'] / read:.0f}" if read else "-") +
                         f" | {100 * b['GB/s'] / peak:.0f} |")
            for p in peers:
                peer = rows.get((p, key[1], key[2], key[3], None))
                line += f" {us(peer) / us(b):.2f}x |" if peer else " - |"
            print(line)
        print()
    dispatch(rows)


if __name__ == "__main__":
    main()
