#!/usr/bin/python3
"""The peer of nuq's trainer: the paper's MNIST MLP (784-512-512-10, ReLU, dropout 0.2, Adam,
batch 128) written plainly in numpy, whose matrix products go to OpenBLAS as nuq's do.
Prints one JSON line: seconds per epoch and the test accuracy. Usage: train_numpy.py DATA_DIR [EPOCHS]"""
import json
import os
import sys
import time

import numpy as np


def load(path, header):
    with open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def main():
    data, epochs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10
    x = load(os.path.join(data, "train-images-idx3-ubyte"), 16).reshape(-1, 784).astype(np.float32) / 255
    y = load(os.path.join(data, "train-labels-idx1-ubyte"), 8).astype(np.int64)
    xt = load(os.path.join(data, "t10k-images-idx3-ubyte"), 16).reshape(-1, 784).astype(np.float32) / 255
    yt = load(os.path.join(data, "t10k-labels-idx1-ubyte"), 8).astype(np.int64)
    rng = np.random.default_rng(1)
    sizes = [(784, 512), (512, 512), (512, 10)]
    w = [rng.uniform(-1, 1, (o, i)).astype(np.float32) * np.float32(np.sqrt(6 / (i + o))) for i, o in sizes]
    b = [np.zeros(o, np.float32) for _, o in sizes]
    params = w + b
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t, lr, p_drop = 0, 1e-3, 0.2
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(len(x))
        for s in range(0, len(x), 128):
            idx = order[s:s + 128]
            a0, labels = x[idx], y[idx]
            z1 = a0 @ w[0].T + b[0]
            k1 = (rng.random(z1.shape, dtype=np.float32) >= p_drop) / np.float32(1 - p_drop)
            a1 = np.maximum(z1, 0) * k1
            z2 = a1 @ w[1].T + b[1]
            k2 = (rng.random(z2.shape, dtype=np.float32) >= p_drop) / np.float32(1 - p_drop)
            a2 = np.maximum(z2, 0) * k2
            z3 = a2 @ w[2].T + b[2]
            e = np.exp(z3 - z3.max(axis=1, keepdims=True))
            g3 = e / e.sum(axis=1, keepdims=True)
            g3[np.arange(len(idx)), labels] -= 1
            g3 /= len(idx)
            g2 = (g3 @ w[2]) * (z2 > 0) * k2
            g1 = (g2 @ w[1]) * (z1 > 0) * k1
            grads = [g1.T @ a0, g2.T @ a1, g3.T @ a2, g1.sum(0), g2.sum(0), g3.sum(0)]
            t += 1
            rate = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
            for p, g, mi, vi in zip(params, grads, m, v):
                mi *= 0.9
                mi += 0.1 * g
                vi *= 0.999
                vi += 0.001 * g * g
                p -= np.float32(rate) * mi / (np.sqrt(vi) + np.float32(1e-7))
        times.append(time.perf_counter() - start)
    a = np.maximum(np.maximum(xt @ w[0].T + b[0], 0) @ w[1].T + b[1], 0) @ w[2].T + b[2]
    accuracy = float((a.argmax(1) == yt).mean() * 100)
    print(json.dumps({"peer": "numpy", "epochs": epochs, "seconds": sum(times),
                      "seconds_per_epoch": sum(times) / epochs, "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
