"""Zero copy: quantizing a 1 GiB float32 array costs its codes and little else.

Measured in a fresh interpreter with resource.getrusage's ru_maxrss (peak resident set, KiB on
Linux): peak after quantizing - peak before the array existed <= array + codes + 64 MiB. A copy of
the array anywhere on the way (a cast, a contiguous copy, a widened buffer) would add 1 GiB.
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    {imports}
    import nuq
    codebook = nuq.design("msptq")
    nuq.quantize(np.random.default_rng(0).laplace(size=(64, 64)).astype(np.float32), codebook)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rows, cols = 16384, 16384  # 2^28 floats: 1 GiB
    w = np.empty((rows, cols), dtype=np.float32)
    rng = np.random.default_rng(1)
    for r in range(0, rows, 1024):  # filled in slices: no float64 temporary of the whole array
        rng.standard_normal(size=(1024, cols), dtype=np.float32, out=w[r:r + 1024])
    {wrap}
    q = nuq.quantize(x, codebook)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # The pass really ran over every weight: the whole agrees with its first 1024 rows (a view).
    assert q.stats["count"] == w.size and abs(q.stats["std"] - 1) < 1e-3, q.stats
    assert abs(q.sqnr_ex_db - nuq.quantize(w[:1024], codebook).sqnr_ex_db) < 0.05
    print(peak - before, w.nbytes, q.codes.nbytes)
""")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_quantizing_a_gigabyte_reads_it_in_place(kind):
    if kind == "torch":
        pytest.importorskip("torch")
        code = SCRIPT.format(imports="import torch", wrap="x = torch.from_numpy(w)")
    else:
        code = SCRIPT.format(imports="", wrap="x = w")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stdout + result.stderr
    growth, array_bytes, code_bytes = map(int, result.stdout.split())
    assert code_bytes == array_bytes // 16  # 2 bits per 32-bit weight
    assert growth <= array_bytes + code_bytes + (64 << 20), f"peak grew by {growth / 2**20:.0f} MiB"
