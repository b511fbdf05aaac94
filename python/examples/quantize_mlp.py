#!/usr/bin/env python3
"""Quantize a PyTorch MLP's linear layers to two bits with MSPTQ and compare its accuracy.

Runs offline in seconds: the data are a synthetic 10-class problem (Gaussian clusters in 64
dimensions), the model a 64-128-10 MLP trained here. The quantized model is evaluated twice: with
its weights dequantized into the torch model, and straight from the packed codes (nuq.nn's layers,
which multiply with nuq.qgemm).
Usage: PYTHONPATH=build/python /usr/bin/python3 python/examples/quantize_mlp.py [--epochs N]
"""

import argparse
import copy

import torch

import nuq
import nuq.nn


def data(centres: torch.Tensor, n: int, generator: torch.Generator):
    labels = torch.randint(0, 10, (n,), generator=generator)
    return centres[labels] + torch.randn(n, 64, generator=generator), labels


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(dim=1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(1)
    centres = 0.5 * torch.randn(10, 64, generator=g)  # close enough that the classes overlap a little
    x_train, y_train = data(centres, args.samples, g)
    x_test, y_test = data(centres, args.samples // 4, g)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        for i in range(0, args.samples, 128):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[i:i + 128]), y_train[i:i + 128]).backward()
            optimiser.step()
    with torch.no_grad():
        fp32 = accuracy(model(x_test), y_test)
        packed = copy.deepcopy(model)
        # The README's five lines: MSPTQ codebook, linear weights quantized, dequantized back in.
        codebook = nuq.design("msptq")
        quantized = nuq.quantize_state_dict(model.state_dict(), codebook, normalise="per-channel")
        model.load_state_dict(nuq.dequantize_state_dict(quantized))
        two_bit = accuracy(model(x_test), y_test)
        # The same network straight from the packed codes: its Linear layers swapped for nuq.qgemm's.
        nuq.nn.quantize_modules(packed, codebook, normalise="per-channel")
        from_codes = accuracy(packed(x_test), y_test)
    for name, q in quantized.items():
        if isinstance(q, nuq.QuantizedTensor):
            print(f"{name}: {tuple(q.shape)}, {q.bits}-bit codes, SQNR_ex {q.sqnr_ex_db:.2f} dB "
                  f"(SQNR_th {codebook.sqnr_db:.2f} dB), {q.nbytes} bytes")
    print(f"FP32 accuracy {fp32:.2f}%")
    print(f"MSPTQ 2-bit accuracy {two_bit:.2f}% (dequantized), {from_codes:.2f}% (qgemm from the codes)")


if __name__ == "__main__":
    main()
