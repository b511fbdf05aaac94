#!/usr/bin/env python3
# A design study for docs/backends.md ("The way past two reads"), not a benchmark of nuq: how many weights would a single read have to patch? BF16 Laplacian tensors of different scales,
# global normalisation, SPTQ 2-bit thresholds (0, +-0.8504 in sigma units), map estimated from a
# strided sample of every tensor; a weight is in the patch set when its BF16 value lies within the
# margin of a provisional threshold (the margin: k times the estimate's standard error).
# Run: python3 bench/single_read_patch_set.py (numpy; about 25 s, 1.5 GB of memory).
import numpy as np
rng = np.random.default_rng(0)
def bf16(x):
    u = x.astype(np.float32).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.view(np.float32).astype(np.float64)
tensors = [bf16(rng.laplace(0.0, s, size=1_000_000) + rng.normal(0, 1e-4)) for s in rng.uniform(0.01, 0.05, 60)]
w = np.concatenate(tensors)
m, sd = w.mean(), w.std()
t = np.array([-0.8504, 0.0, 0.8504])
for frac in [1e-3, 1e-2, 5e-2]:
    step = int(1 / frac)
    sample = np.concatenate([x[::step] for x in tensors])
    mh, sh = sample.mean(), sample.std()
    n = sample.size
    se_m, se_s = sh / np.sqrt(n), sh * np.sqrt((6 - 1) / (4 * n))
    T, Th = m + sd * t, mh + sh * t
    for k in [4, 6]:
        margin = k * (se_m + se_s * np.abs(t))
        inset = np.zeros(w.size, bool)
        for j in range(3): inset |= np.abs(w - Th[j]) <= margin[j]
        covered = np.all(np.abs(T - Th) <= margin)
        changed = (np.searchsorted(T, w) != np.searchsorted(Th, w)).sum()
        print(f"sample {frac:.0e} ({n} weights): |dm|/sd {abs(m-mh)/sd:.1e} |ds|/sd {abs(sd-sh)/sd:.1e}; margin {k} se: "
              f"patch set {inset.mean()*100:.3f} % (threshold at the mean {(np.abs(w-Th[1])<=margin[1]).mean()*100:.3f} %), "
              f"exact inside margin {covered}; codes that change {changed/w.size*100:.4f} %")
