#!/usr/bin/env python3
"""The PyTorch eager peer of nuq's GPU weight pipeline (#4): the same job, written as a PyTorch user
would: mean and standard deviation, torch.bucketize against the two-bit codebook's thresholds in
the weights' units, four codes packed per byte with shifts, and the SQNR sums. Two ways: `plain`,
as first written (int64 codes, float64 copies of the weights for the sums), and `lean`, as a user
who minds memory traffic writes it (int32 codes, the sums as float32 dot products of one error
tensor). Timed as nuq's pipeline is (kernels/bench_timing.cu): after a warm-up, the median of
`--runs` runs, each timed with CUDA events and started from a cold L2 (twice its size read before
each, out of the timing).

    python3 bench/torch_quantize.py --out torch_quantize.json   # on the GPU machine

Prints and writes {"runs": [{"weights": N, "ms": ..., "variants": {"plain": ..., "lean": ...}}, ...]}:
"ms" is the faster variant's, the peer bench/quantize_report.py puts beside bench_quantize's GPU rows.
"""
import argparse
import json
import math

import torch

# SPTQ, two bits, unit Laplacian at its iterative x_max (nuq design -m sptq -b 2 --json gives
# these; the peer need not be bit-exact, only do the same amount of work).
THRESHOLDS = [-0.850442453078135, 0.0, 0.850442453078135]
LEVELS = [-1.70088490615627, -0.4252212265390675, 0.4252212265390675, 1.70088490615627]


def plain(w, thresholds, levels):
    mean = w.mean(dtype=torch.float64)
    std = w.std(unbiased=False)
    t = (mean + std * thresholds).to(torch.float32)
    codes = torch.bucketize(w, t, right=True).to(torch.uint8)
    quantized = (mean + std * levels).to(torch.float32)[codes.long()]
    signal = (w.double() ** 2).sum()
    noise = ((w - quantized).double() ** 2).sum()
    c = codes.view(-1, 4)
    packed = c[:, 0] | (c[:, 1] << 2) | (c[:, 2] << 4) | (c[:, 3] << 6)
    return packed, signal, noise


def lean(w, thresholds, levels):
    std, mean = torch.std_mean(w, unbiased=False)
    t = (mean + std * thresholds).to(torch.float32)
    codes = torch.bucketize(w, t, right=True, out_int32=True)
    error = w - torch.index_select((mean + std * levels).to(torch.float32), 0, codes)
    signal = torch.dot(w, w)
    noise = torch.dot(error, error)
    c = codes.to(torch.uint8).view(-1, 4)
    packed = c[:, 0] | (c[:, 1] << 2) | (c[:, 2] << 4) | (c[:, 3] << 6)
    return packed, signal, noise


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-log2", type=int, default=20)
    parser.add_argument("--max-log2", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", default="torch_quantize.json")
    args = parser.parse_args()
    device = torch.device("cuda")
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    thresholds = torch.tensor(THRESHOLDS, dtype=torch.float64, device=device)
    levels = torch.tensor(LEVELS, dtype=torch.float64, device=device)
    # Read, not written, before each run: a written flush leaves the L2 full of dirty lines that the
    # timed run would pay to write back.
    flush = torch.zeros(2 * l2 // 4, dtype=torch.int32, device=device)
    runs = []
    for log2 in range(args.min_log2, args.max_log2 + 1, 2):
        n = 1 << log2
        # Sampled on the device: drawing 2^30 values on the host would take longer than the timing.
        dist = torch.distributions.Laplace(torch.tensor(0.0, device=device),
                                           torch.tensor(0.05 / math.sqrt(2.0), device=device))
        w = None
        variants = {}
        try:
            w = dist.sample((n,))
            for name, pipeline in (("plain", plain), ("lean", lean)):
                pipeline(w, thresholds, levels)
                times = []
                for i in range(args.runs):
                    flush.sum()
                    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    pipeline(w, thresholds, levels)
                    stop.record()
                    stop.synchronize()
                    times.append(start.elapsed_time(stop))
                variants[name] = sorted(times)[len(times) // 2]
        except torch.cuda.OutOfMemoryError:
            print(f"2^{log2}: out of memory in PyTorch eager" + (f" (after {', '.join(variants)})" if variants else ""))
        finally:
            w = None
            torch.cuda.empty_cache()
        if not variants:
            continue
        ms = min(variants.values())
        runs.append({"weights": n, "ms": ms, "variants": variants})
        print(f"2^{log2} weights: " + ", ".join(f"{name} {t:.3f} ms" for name, t in variants.items()))
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(device), "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
