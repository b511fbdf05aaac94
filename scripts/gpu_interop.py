#!/usr/bin/env python3
"""nuq's files and predictions read back by PyTorch (scripts/gpu-check's interop step).

Checks, each recorded in the JSON written to --out:
  1. safetensors.torch.load_file reads nuq's quantized and dequantized files, and every tensor
     it returns equals the bytes nuq wrote (read here with a plain parser of the format, so that a
     wrong dtype, shape or offset in nuq's header shows as a mismatch rather than being trusted);
  2. the quantized file's codes, unpacked here (LSB-first, each row byte-aligned) and looked up
     in its codebooks, give exactly the dequantized file's tensors;
  3. a PyTorch forward pass of the dequantized MLP (784-512-512-10, ReLU) on the first --images
     MNIST test images predicts what `nuq eval --predictions` predicted for them, from the packed
     codes, for at least 99.9 % of the images (logits within rounding of a tie may fall either way).
Runs on the GPU when torch sees one, else on the CPU. Exit status 0 when every check holds.
"""
import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch

from nuq_format import decode, read  # the plain reader of nuq's format (docs/format.md), beside this script


def read_raw(path):
    """{name: numpy array} and the metadata, straight from the file's header and bytes."""
    _, meta, tensors = read(path)
    return tensors, meta


def load_torch(path):
    from safetensors.torch import load_file  # the image's safetensors; its absence is reported
    return load_file(path)


def same_tensors(raw, loaded):
    """Names whose torch tensor differs from the raw bytes (dtype, shape or any value)."""
    bad = sorted(set(raw) ^ set(loaded))
    for name in set(raw) & set(loaded):
        t = loaded[name]
        ours = raw[name]
        # numpy has no view of torch.uint16 (torch >= 2.3) or bfloat16: through int16, the same bits
        # (nuq_format reads BF16 as its uint16 bits).
        as_bits = t.dtype in (getattr(torch, "uint16", None), torch.bfloat16)
        theirs = t.view(torch.int16).numpy().view(np.uint16) if as_bits else t.numpy()
        if theirs.dtype != ours.dtype or theirs.shape != ours.shape or not np.array_equal(theirs, ours):
            bad.append(name)
    return bad


def idx_images(path, count):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"{path}: not an IDX image file"
        count = min(count, n)
        pixels = np.frombuffer(f.read(count * rows * cols), dtype=np.uint8)
    return pixels.reshape(count, rows * cols).astype(np.float32) / 255.0  # as nuq's loader scales them


def find(folder, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"{folder}: no {stem}(.gz)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quantized", required=True)
    p.add_argument("--dequantized", required=True)
    p.add_argument("--predictions", required=True, help="nuq eval --predictions output")
    p.add_argument("--data", required=True, help="folder holding mnist/t10k-images-idx3-ubyte(.gz)")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    result = {"torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu", "checks": {}}
    checks = result["checks"]

    q_raw, q_meta = read_raw(a.quantized)
    d_raw, _ = read_raw(a.dequantized)
    try:
        checks["load_file_quantized_mismatches"] = same_tensors(q_raw, load_torch(a.quantized))
        dequantized = load_torch(a.dequantized)
        checks["load_file_dequantized_mismatches"] = same_tensors(d_raw, dequantized)
    except ImportError as e:
        result["safetensors"] = f"not importable: {e}"
        dequantized = {k: torch.from_numpy(v.copy()) for k, v in d_raw.items()}
    _, decoded = decode(q_meta, q_raw)
    checks["decoded_codes_differ_from_dequantized"] = sorted(
        n for n in decoded if n not in d_raw or not np.array_equal(decoded[n], d_raw[n]))

    device = torch.device(result["device"])
    x = torch.from_numpy(idx_images(find(os.path.join(a.data, "mnist"), "t10k-images-idx3-ubyte"), a.images)).to(device)
    # In FP64: never TF32, whatever this torch's defaults and flags (whose API changed in torch 2.9),
    # and at least as exact as nuq's own FP32 paths.
    x = x.to(torch.float64)
    w = {k: v.to(device=device, dtype=torch.float64) for k, v in dequantized.items()}
    with torch.no_grad():
        h = torch.relu(x @ w["fc1.weight"].T + w["fc1.bias"])
        h = torch.relu(h @ w["fc2.weight"].T + w["fc2.bias"])
        ours = (h @ w["fc3.weight"].T + w["fc3.bias"]).argmax(dim=1).cpu().numpy()
    with open(a.predictions) as f:
        nuq = np.array([int(line) for line in f][: len(ours)])
    agree = float(np.mean(ours == nuq)) if len(nuq) == len(ours) else 0.0
    checks["prediction_agreement"] = agree
    result["images"] = int(len(ours))

    failures = [k for k in ("load_file_quantized_mismatches", "load_file_dequantized_mismatches",
                            "decoded_codes_differ_from_dequantized") if checks.get(k)]
    if "safetensors" in result:
        failures.append("safetensors")
    if agree < 0.999:
        failures.append("prediction_agreement")
    result["failures"] = failures
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
