#!/usr/bin/env python3
"""bench_qgemm's JSON as Markdown: per layer and batch, nuq's time, TFLOP/s, GB/s of weight bytes
and, on the GPU, that as a fraction of the device copy's bandwidth measured in the same run
(BM_GpuCopy, read + write) and of the device's peak (from its clocks, in the JSON's context), and
the speed-up over each peer timed in the same run (cuBLAS FP32, TF32, BF16; OpenBLAS on the CPU).

    bench/qgemm_report.py bench_qgemm.json > table.md
"""
import argparse

from bench_json import context, microseconds, results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("json")
    args = parser.parse_args()
    rows = {}
    for family, fields, b in results(args.json):
        rows[(family, fields.get("m"), fields.get("n"), fields.get("k"), fields.get("bits"))] = b
    us = microseconds
    peak = float(context(args.json).get("gpu_peak_bandwidth_gbs", "nan"))
    copy = next((b["GB/s"] for (family, *_), b in rows.items() if family == "BM_GpuCopy"), float("nan"))
    if any(k[0].startswith("BM_Gpu") for k in rows):
        print(f"Device copy {copy:.0f} GB/s (read + write, this run); peak {peak:.0f} GB/s (the device's clocks).\n")
    for ours, peers, title in (
        ("BM_GpuQgemm", ["BM_CublasFp32", "BM_CublasTf32", "BM_CublasBf16"], "GPU, two-bit codes"),
        ("BM_GpuQgemmBf16", ["BM_CublasFp32", "BM_CublasTf32", "BM_CublasBf16"],
         "GPU, two-bit codes, X in BF16 (as the cuBLAS BF16 peer), tensor cores above m = 16"),
        ("BM_QuantizedGemmPrepared", ["BM_OpenBlasSgemm"], "CPU, weights prepared once (as a network uses them)"),
        ("BM_QuantizedGemm", ["BM_OpenBlasSgemm"], "CPU, from the stored codes on every call"),
    ):
        keys = sorted((k for k in rows if k[0] == ours), key=lambda k: (k[2], k[3], k[4], k[1]))
        if not keys:
            continue
        print(f"## {title}\n")
        names = [p.replace("BM_", "") for p in peers]
        gpu = ours.startswith("BM_Gpu")  # fractions of the memory's bandwidth: the GPU's rows only
        print("| n x k | m | bits | nuq us | TFLOP/s | weight GB/s |" + (" % copy | % peak |" if gpu else "") + " " +
              " | ".join(f"vs {n}" for n in names) + " |")
        print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if gpu else "") + "---:|" * len(peers))
        for key in keys:
            b = rows[key]
            line = f"| {key[2]} x {key[3]} | {key[1]} | {key[4]} | {us(b):.1f} | {b['TFLOP/s']:.2f} | {b['GB/s']:.0f} |"
            if gpu:
                line += f" {100 * b['GB/s'] / copy:.0f} | {100 * b['GB/s'] / peak:.0f} |"
            for p in peers:
                peer = rows.get((p, key[1], key[2], key[3], None))
                line += f" {us(peer) / us(b):.2f}x |" if peer else " - |"
            print(line)
        print()


if __name__ == "__main__":
    main()
