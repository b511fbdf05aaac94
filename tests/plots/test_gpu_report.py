#!/usr/bin/env python3
"""bench/gpu_report.py on the invented sample of tests/fixtures/gpu-check (the files scripts/gpu-check
leaves in its state folder): every goal is read off the sample, met or not; a failed test, a
sanitizer's time-out and a missing step are reported as such; Nsight Compute's profiles are read."""
import os
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "report.md")
    subprocess.run([sys.executable, os.path.join(root, "bench", "gpu_report.py"),
                    os.path.join(root, "tests", "fixtures", "gpu-check"), "--name", "sample", "--out", out], check=True)
    text = open(out).read()
goals = [l for l in text.splitlines() if l.startswith("| ") and ("met |" in l or "not measured" in l)]
assert len(goals) == 24, f"expected 24 goal rows, found {len(goals)}:\n" + "\n".join(goals)
assert not any("not measured" in l for l in goals), "a goal was not read off the sample"
# The fastest path is named; the peers come from their own step's file (bench_qgemm_peers.json).
assert "| qgemm 8192^2, m = 1024, two-bit against CublasBf16 | 87.2 / 120.0 us (dequant + cuBLAS) = 0.73x | > 1.0x | NOT met |" in text
assert "| large-batch qgemm 8192^2, m = 1024, two-bit against CublasBf16 | 87.2 / 120.0 us (dequant + cuBLAS) = 0.73x | >= 0.7x | met |" in text
assert "| mma qgemm 8192^2, m = 16, two-bit against CublasBf16 | 36.8 / 6.4 us = 5.75x | >= 5.0x | met |" in text
assert "| mma qgemm 8192^2, m = 64, two-bit against CublasBf16 | 40.0 / 20.0 us = 2.00x | >= 2.5x | NOT met |" in text
assert "| GEMV qgemm 8192^2, m = 1, two-bit against CublasFp32 | 70.5 / 6.1 us = 11.56x | >= 12.0x | NOT met |" in text
# Code bytes are set against a kernel's read of as many bytes, where one was timed (not the 1 GiB copy).
assert "| GEMV qgemm 8192^2, m = 4, two-bit, code bytes against a read of as many bytes | 2397 / 3700 GB/s = 0.65 | (reported) | - |" in text
assert "| mma qgemm 8192^2, m = 1, two-bit, code bytes against a read of as many bytes | 3166 / 3700 GB/s = 0.86 | >= 0.8 | met |" in text
assert "| MNIST MLP, one image per launch (1,000 launches in flight), two-bit against cuBLAS FP32 | 20.050 / 6.200 us per image = 3.23x | > 1.0x | met |" in text
assert "| MNIST MLP, two-bit, time per image at one image per launch | 6.20 us | <= 10.0 us | met |" in text
assert "98 passed, 1 skipped in 41.20s\n- SKIPPED [1] python/tests/test_torch.py:97: invented" in text
assert "FAILED QgemmGpu.DeviceMlpPredictsLikeTheCpu" in text
assert "- bench_network BM_GpuMlp/bits:2/batch:4/images:1000/bf16:0/cluster:1/iterations:5/manual_time: invented: " \
       "the cluster launch was refused" in text, "a benchmark skipped with an error is not reported"
assert "## Tests\n\n2 passed, 1 failed, 0 skipped" in text, "the two test steps' counts are not summed"
assert "- racecheck: timeout 30s" in text and "- initcheck: not run" in text
# On gVisor the tools refuse the device: said so, and the runtime named beside the device.
assert "- synccheck: failed 1 2s; the runtime refused the device" in text
assert "cuBLAS 13.0.2 (/usr/local/cuda/lib64/libcublas.so.13)." in text
assert "Host kernel: `Linux 4.4.0 x86_64` (gVisor: no compute-sanitizer" in text
assert "| 8192 x 8192 | 1 | 2 | 8.9 | 15.08 | 1885 | 44 | 51 | 38 | 7.92x |" in text, "no % of the read of the code bytes"
assert "| 2^30 | 2.406 | 3681.6 | 4300.0 | 0.86 |" in text and "### GPU, the default kernels, X in FP32\n" in text
# Every path side by side per case, and the wins that choose the dispatch (within one arithmetic,
# over layers where two or more paths were measured).
assert "| 8192 x 8192 | 2 | 1 | 8.9 | 6.1 | 9.2 | 5.3 | - | GEMV | mma | 6.80x | 11.56x |" in text
assert "- FP32: 2-bit m = 1: GEMV 1/1\n" in text
assert ("- BF16 operands: 2-bit m = 1: mma 1/1; 2-bit m = 16: mma 1/1; 2-bit m = 256: dequant + cuBLAS 1/1; "
        "2-bit m = 1024: dequant + cuBLAS 1/1\n") in text
# Nsight Compute's CSV in both of its layouts (a column a metric; a row a metric, scaled units) and
# a profile ncu could not take.
assert ("| mma-m16 | `nuq::cuda::qgemm_mma_kernel<2, __nv_bfloat16>` | 36.8 | 17.4 | 474 | 9.8 | 41.2 | 128 | 23.5 | "
        "long_scoreboard 3.10, math_pipe_throttle 1.25, wait 0.75 |") in text
assert "| fused-mlp-cluster | `fused_mlp_cluster_kernel` | 5.9 | 1.4 | 231 | - | - | - | - | barrier 2.50, long_scoreboard 0.50 |" in text
assert "| stats-2e28 | (==ERROR== Failed to initialize the profiler: LibraryNotLoaded) |" in text
print("gpu_report: every goal read off the sample")
