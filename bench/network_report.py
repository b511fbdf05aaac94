#!/usr/bin/env python3
"""bench_network's JSON as Markdown: per device and batch, the MNIST MLP's time per image in FP32
(OpenBLAS / cuBLAS SGEMM) and with two-bit codes (qgemm), and the speed-up of the two-bit network.

    bench/network_report.py bench_network.json > table.md
"""
import argparse
import json


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("json")
    args = parser.parse_args()
    with open(args.json) as f:
        data = json.load(f)
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        parts = b.get("run_name", b["name"]).split("/")
        fields = {p.split(":")[0]: int(p.split(":")[1]) for p in parts[1:] if ":" in p}
        per_image = b["real_time"] * scale[b["time_unit"]] / fields["images"]
        rows[(parts[0], fields["batch"], fields["images"], fields["bits"], fields.get("bf16", 0))] = per_image
    print("| device | batch | images | FP32 µs/image | two-bit µs/image | two-bit speed-up | two-bit BF16 µs/image | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for family, title in (("BM_CpuMlp", "CPU"), ("BM_GpuMlp", "GPU (device-resident)")):
        for batch, images in sorted({(b, n) for (f, b, n, _, _) in rows if f == family}):
            fp32, two_bit = rows.get((family, batch, images, 0, 0)), rows.get((family, batch, images, 2, 0))
            if fp32 is None or two_bit is None:
                continue
            tensor = rows.get((family, batch, images, 2, 1))
            extra = f"{tensor:.3f} | {fp32 / tensor:.2f}× |" if tensor else "- | - |"
            print(f"| {title} | {batch} | {images} | {fp32:.3f} | {two_bit:.3f} | {fp32 / two_bit:.2f}× | {extra}")


if __name__ == "__main__":
    main()
