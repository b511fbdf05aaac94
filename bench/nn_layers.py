#!/usr/bin/env python3
"""nuq.nn's QuantizedLinear against torch.nn.Linear, as a PyTorch user calls them: one layer of
`--rows` x `--cols` (an LLM's 4096 x 4096 by default), inputs of `--batches` rows, in eval mode under
torch.no_grad. Both layers are timed in the same run, alternating, each the median of `--runs` calls
after a warm-up; the quantized layer's codes are laid out for its products by the warm-up calls
(as in any model after its first batch); with `--call-by-call` the two alternate every call, as
the layers of a model that has some of each do. The ratio is torch's time over nuq's (above 1: the
quantized layer is faster).

    PYTHONPATH=build/python /usr/bin/python3 bench/nn_layers.py --out nn_layers.json [--device cuda]

On the CPU, nuq runs on its own thread count (`--threads`, default nuq.get_num_threads()), torch on
torch.get_num_threads() for its own loops and, for its GEMMs where it calls OpenBLAS (Debian's
PyTorch), on OpenBLAS's threads. Both are recorded, with the settings that decide how long each
pool's idle threads keep their cores after a call, spinning, and so take them from the other
pool's next one: OMP_WAIT_POLICY and GOMP_SPINCOUNT (OpenMP's, nuq's loops) and
OPENBLAS_THREAD_TIMEOUT (OpenBLAS's, torch's GEMMs and nuq's panels), read when the libraries load.

Writes {"device", "threads", "nuq_threads", "wait_settings", "torch", "runs": [{"bits", "batch",
"torch_ms", "nuq_ms", "speedup"}]}.
"""
import argparse
import json
import os
import statistics
import time

import torch

import nuq
import nuq.nn

WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")
DESIGNS = {2: ("msptq", 2), 4: ("lloyd-max", 4), 8: ("uniform", 8)}


def median_ms(layer, x, runs: int, sync) -> float:
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        layer(x)
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8], choices=sorted(DESIGNS),
                        help="designs by width: " + ", ".join(f"{b}: {m}" for b, (m, _) in DESIGNS.items()))
    parser.add_argument("--method", action="append", default=[], metavar="BITS=METHOD",
                        help="another design for a width, e.g. 8=mulaw (levels off a grid)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="nuq's CPU threads (0: its default)")
    parser.add_argument("--call-by-call", action="store_true",
                        help="alternate the two layers every call instead of every --runs calls")
    parser.add_argument("--out")
    args = parser.parse_args()
    designs = dict(DESIGNS)
    for choice in args.method:
        width, _, method = choice.partition("=")
        if not width.isdigit() or int(width) not in designs or not method:
            parser.error(f"--method {choice}: expected BITS=METHOD with BITS one of {sorted(designs)}")
        designs[int(width)] = (method, int(width))
    nuq.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    torch.manual_seed(1)
    linear = torch.nn.Linear(args.cols, args.rows).to(args.device).eval()
    wait_settings = {name: os.environ.get(name) for name in WAIT_SETTINGS}
    print(f"torch threads {torch.get_num_threads()}, nuq threads {nuq.get_num_threads()}, "
          + ", ".join(f"{name} {value or '(unset)'}" for name, value in wait_settings.items()))
    results = []
    with torch.no_grad():
        for bits in args.bits:
            method, width = designs[bits]
            model = torch.nn.Sequential(torch.nn.Linear(args.cols, args.rows)).to(args.device).eval()
            model.load_state_dict({"0." + k: v for k, v in linear.state_dict().items()})
            nuq.nn.quantize_modules(model, nuq.design(method, width), normalise="per-channel", device=args.device)
            for batch in args.batches:
                x = torch.randn(batch, args.cols, device=args.device)
                for _ in range(3):  # warm-up: caches, thread pools, the codes' layout for the look-up
                    linear(x)
                    model(x)
                if args.call_by_call:  # as in a model whose layers are some of each
                    pairs = [(median_ms(linear, x, 1, sync), median_ms(model, x, 1, sync))
                             for _ in range(3 * args.runs)]
                else:  # blocks of each, alternated, so that a slow phase of the machine hits both
                    pairs = [(median_ms(linear, x, args.runs, sync), median_ms(model, x, args.runs, sync))
                             for _ in range(3)]
                torch_ms = statistics.median(p[0] for p in pairs)
                nuq_ms = statistics.median(p[1] for p in pairs)
                row = {"bits": bits, "method": method, "batch": batch, "torch_ms": torch_ms, "nuq_ms": nuq_ms,
                       "speedup": torch_ms / nuq_ms}
                results.append(row)
                print(f"{bits}-bit {method:9s} batch {batch:4d}: torch.nn.Linear {torch_ms:8.3f} ms, "
                      f"QuantizedLinear {nuq_ms:8.3f} ms, {row['speedup']:.2f}x")
    report = {"device": args.device, "threads": torch.get_num_threads(), "nuq_threads": nuq.get_num_threads(),
              "wait_settings": wait_settings, "call_by_call": args.call_by_call,
              "torch": torch.__version__,
              "rows": args.rows, "cols": args.cols, "runs": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
