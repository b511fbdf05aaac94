#!/usr/bin/env python3
"""bench_network's JSON as Markdown: per device and batch, the MNIST MLP's time per image in FP32
(OpenBLAS / cuBLAS SGEMM) and with two-bit codes (qgemm), and the speed-up of the two-bit network.

    bench/network_report.py bench_network.json > table.md
"""
import argparse

from bench_json import microseconds, results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("json")
    args = parser.parse_args()
    rows = {}
    for family, fields, b in results(args.json):
        per_image = microseconds(b) / fields["images"]
        key = (family, fields["batch"], fields["images"], fields["bits"], fields.get("bf16", 0), fields.get("cluster", 0))
        rows[key] = per_image
    print("| device | batch | images | FP32 µs/image | two-bit µs/image | two-bit speed-up | two-bit BF16 µs/image | speed-up "
          "| two-bit, a cluster of SMs per batch µs/image | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for family, title in (("BM_CpuMlp", "CPU"), ("BM_GpuMlp", "GPU (device-resident)")):
        for batch, images in sorted({(b, n) for (f, b, n, *_) in rows if f == family}):
            fp32, two_bit = rows.get((family, batch, images, 0, 0, 0)), rows.get((family, batch, images, 2, 0, 0))
            if fp32 is None or two_bit is None:
                continue
            extra = ""
            for variant in (rows.get((family, batch, images, 2, 1, 0)), rows.get((family, batch, images, 2, 0, 1))):
                extra += f" {variant:.3f} | {fp32 / variant:.2f}× |" if variant else " - | - |"
            print(f"| {title} | {batch} | {images} | {fp32:.3f} | {two_bit:.3f} | {fp32 / two_bit:.2f}× |{extra}")


if __name__ == "__main__":
    main()
