#!/usr/bin/env python3
"""One sharded checkpoint quantized by `nuq quantize` on two devices (scripts/gpu-check's
checkpoint step): the two reports' rates and per-pass times side by side, and the outputs compared
with the plain reader of the format (scripts/nuq_format.py, no nuq code): the same shards, tensors,
dtypes and shapes, kept tensors byte for byte, and the share of code bytes that differ (a weight
within rounding of a threshold may take either code: the devices' sums differ in their last bits).

  checkpoint_devices.py --input DIR --out JSON NAME=REPORT.json:OUTPUT_DIR NAME=REPORT.json:OUTPUT_DIR

Exit status 0 when the outputs agree (at most 1 code byte in 10,000 differs), 1 otherwise.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from nuq_format import read  # noqa: E402  (the plain reader, beside scripts/gpu_interop.py)

MAX_DIFFERING = 1e-4


def run_of(spec):
    name, rest = spec.split("=", 1)
    report, output = rest.split(":", 1)
    with open(report) as f:
        return name, json.load(f), output


def compare(a_dir, b_dir):
    """Differences between two output folders of the same input, as counts."""
    shards = sorted(f for f in os.listdir(b_dir) if f.endswith(".safetensors"))
    result = {"shards": len(shards), "problems": [], "code_bytes": 0, "differing_code_bytes": 0, "tensors": 0}
    if sorted(f for f in os.listdir(a_dir) if f.endswith(".safetensors")) != shards:
        result["problems"].append("different shard files")
        return result
    for shard in shards:
        _, _, a = read(os.path.join(a_dir, shard))
        _, meta, b = read(os.path.join(b_dir, shard))
        if sorted(a) != sorted(b):
            result["problems"].append(f"{shard}: different tensor names")
            continue
        quantized = json.loads(meta["nuq.quantized"])["tensors"]
        for name in b:
            result["tensors"] += 1
            if a[name].dtype != b[name].dtype or a[name].shape != b[name].shape:
                result["problems"].append(f"{shard}: {name}: {a[name].dtype}{a[name].shape} vs {b[name].dtype}{b[name].shape}")
            elif name.endswith(".codes"):
                result["code_bytes"] += b[name].nbytes
                result["differing_code_bytes"] += int(np.count_nonzero(a[name].view(np.uint8) != b[name].view(np.uint8)))
            elif not any(name == q + suffix for q in quantized for suffix in (".codebook", ".scales", ".grid")):
                if a[name].tobytes() != b[name].tobytes():  # kept as it was
                    result["problems"].append(f"{shard}: kept tensor {name} differs")
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="the checkpoint both runs quantized")
    p.add_argument("--out", required=True)
    p.add_argument("runs", nargs=2, help="NAME=REPORT.json:OUTPUT_DIR")
    a = p.parse_args()
    runs = [run_of(spec) for spec in a.runs]
    size = sum(os.path.getsize(os.path.join(a.input, f)) for f in os.listdir(a.input) if f.endswith(".safetensors"))
    result = {"input_bytes": size, "runs": {}}
    for name, report, _ in runs:
        result["runs"][name] = {k: report.get(k) for k in ("device", "seconds", "statistics_seconds", "quantize_seconds",
                                                           "gb_per_second", "sqnr_ex_db", "within")}
    (first, r0, _), (second, r1, _) = runs
    if r1.get("seconds"):
        result["rate_ratio"] = {f"{first}/{second}": r1["seconds"] / r0["seconds"]}
    result["comparison"] = compare(runs[0][2], runs[1][2])
    c = result["comparison"]
    share = c["differing_code_bytes"] / c["code_bytes"] if c["code_bytes"] else 1.0
    c["differing_share"] = share
    result["agree"] = not c["problems"] and c["code_bytes"] > 0 and share <= MAX_DIFFERING and \
        abs(r0["sqnr_ex_db"] - r1["sqnr_ex_db"]) < 1e-3
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
