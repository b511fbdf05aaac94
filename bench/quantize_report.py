#!/usr/bin/env python3
"""Turns bench_quantize's JSON (and, when given, torch_quantize.py's) into a Markdown table:
per size, the pipeline's GB/s over its minimum traffic, the copy peer's GB/s measured in the same
run, their ratio, and on the GPU the PyTorch eager time over ours.

    bench/quantize_report.py bench_quantize.json [torch_quantize.json] > table.md
"""
import json
import sys

from bench_json import context as bench_context
from bench_json import microseconds, results


def median_rows(path):
    context = bench_context(path)
    rows = {(family, next(iter(fields.values()))): b for family, fields, b in results(path)}
    return context, rows


def time_ms(b):
    return microseconds(b) / 1e3


def main():
    context, rows = median_rows(sys.argv[1])
    torch = {}
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            torch = {r["weights"]: r["ms"] for r in json.load(f)["runs"]}
    gpu = f"; {context['gpu_name']}, peak {float(context['gpu_peak_bandwidth_gbs']):.0f} GB/s" if "gpu_name" in context else ""
    print(f"Machine: {context.get('num_cpus', '?')} CPUs at {context.get('mhz_per_cpu', '?')} MHz{gpu}; "
          f"{context.get('date', '')}\n")
    for side, pipeline, copy in (("CPU", "BM_CpuPipeline", "BM_CpuCopy"), ("GPU", "BM_GpuPipeline", None)):
        sizes = sorted(n for (name, n) in rows if name == pipeline)
        if not sizes:
            continue
        print(f"## {side}\n")
        header = "| weights | pipeline ms | pipeline GB/s (min. traffic) | copy GB/s (read+write) | fraction of copy |"
        rule = "|---:|---:|---:|---:|---:|"
        if side == "GPU" and torch:
            header += " PyTorch eager ms | speed-up over PyTorch |"
            rule += "---:|---:|"
        print(header)
        print(rule)
        for n in sizes:
            b = rows[(pipeline, n)]
            copy_gbs = rows[(copy, n)]["GB/s"] if copy and (copy, n) in rows else b["copy_GB/s"]
            gbs = b["GB/s"]
            line = f"| 2^{n.bit_length() - 1} | {time_ms(b):.3f} | {gbs:.1f} | {copy_gbs:.1f} | {gbs / copy_gbs:.2f} |"
            if side == "GPU" and torch:
                t = torch.get(n)
                line += f" {t:.3f} | {t / time_ms(b):.1f}x |" if t else " - | - |"
            print(line)
        print()


if __name__ == "__main__":
    main()
