"""python/examples/quantize_mlp.py runs and its two-bit model keeps its accuracy."""

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quantize_mlp.py"


def test_example_quantizes_an_mlp_and_keeps_its_accuracy():
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "2", "--samples", "8000"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    fp32 = float(re.search(r"FP32 accuracy ([\d.]+)%", result.stdout).group(1))
    dequantized, from_codes = map(float, re.search(r"accuracy ([\d.]+)% \(dequantized\), ([\d.]+)%",
                                                   result.stdout).groups())
    assert fp32 > 90  # the task is learnable: a broken comparison cannot pass as "no loss"
    assert dequantized >= fp32 - 3
    assert abs(from_codes - dequantized) <= 0.1  # the packed product and the dequantized model agree
