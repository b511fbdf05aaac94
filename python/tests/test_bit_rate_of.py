"""nuq.bit_rate_of: the bit-rate rule for given weights, predicted and measured. A state dict's
answer is `nuq bitrate --model` of the file nuq.save writes of it; each measured rate is the SQNR
of the weights quantized by nuq.quantize at that rate and restored, summed here in float64; and
what it refuses, it refuses in Python's terms."""

import json
import math
import subprocess

import numpy as np
import pytest

import nuq


def _state_dict(rng) -> dict:
    pruned = rng.laplace(0.0, 0.04, (256, 256)).astype(np.float32)
    pruned[rng.random(pruned.shape) < 0.9] = 0.0  # pruned: no Laplacian describes it
    return {
        "layer.0.weight": rng.laplace(0.01, 0.05, (128, 256)).astype(np.float32),
        "layer.0.bias": np.zeros(128, np.float32),  # kept, as quantize_state_dict keeps it
        "layer.1.weight": rng.laplace(0.0, 0.2, (64, 300)).astype(np.float16),
        "layer.2.weight": pruned,
    }


@pytest.mark.parametrize("per_tensor", [False, True])
def test_a_state_dicts_rate_is_nuq_bitrate_of_its_file(per_tensor, rng, nuq_binary, tmp_path):
    weights = _state_dict(rng)
    got = nuq.bit_rate_of(weights, 30.0, per_tensor=per_tensor, measure=True)
    path = tmp_path / "m.safetensors"
    nuq.save(path, weights)
    run = subprocess.run([nuq_binary, "bitrate", "--model", str(path), "--sqnr-min", "30", "--measure", "--json"]
                         + (["--per-tensor"] if per_tensor else []), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert got["bits"] == printed["bits"]
    assert got["from_db"] == pytest.approx(printed["from_db"], abs=1e-9)
    assert got["to_db"] == pytest.approx(printed["to_db"], abs=1e-9)
    assert [r["bits"] for r in got["rates"]] == [r["bits"] for r in printed["rates"]] == list(range(1, 17))
    for mine, theirs in zip(got["rates"], printed["rates"]):
        assert mine["worst_sqnr_db"] == pytest.approx(theirs["worst_sqnr_db"], abs=1e-9)
    assert got["weights"]["tensors"] == printed["model"]["tensors"] == 3
    assert got["weights"]["count"] == printed["model"]["weights"]
    assert got["weights"]["smallest_rms"] == printed["model"]["smallest_rms"]["tensor"]
    measured, theirs = got["measured"], printed["measured"]
    assert measured["bits"] == theirs["bits"] and measured["bits"] >= got["bits"]  # zeros cost more than predicted
    assert len(measured["rates"]) == len(theirs["rates"]) >= 2
    for mine, rate in zip(measured["rates"], theirs["rates"]):
        assert mine["bits"] == rate["bits"]
        assert mine["sqnr_ex_db"] == pytest.approx(rate["sqnr_ex_db"], abs=1e-9)
        assert mine["lowest_tensor"] == rate["lowest_tensor"] == "layer.2.weight"
        assert mine["lowest_sqnr_ex_db"] == pytest.approx(rate["lowest_sqnr_ex_db"], abs=1e-9)
    kurtosis = measured["excess_kurtosis"]
    assert set(kurtosis) == {"layer.0.weight", "layer.1.weight", "layer.2.weight"}
    for end in ("lowest_kurtosis", "highest_kurtosis"):
        assert kurtosis[theirs[end]["tensor"]] == pytest.approx(theirs[end]["excess_kurtosis"], abs=1e-6)
    assert theirs["highest_kurtosis"]["tensor"] == "layer.2.weight"


def _sqnr_db(w: np.ndarray, bits: int) -> float:
    """The SQNR of w quantized unnormalised by nuq.quantize at `bits` and restored, summed in float64."""
    restored = nuq.quantize(w, nuq.design("uniform", bits), normalise="none").dequantize().astype(np.float64)
    w = w.astype(np.float64)
    return 10.0 * math.log10(np.sum(w * w) / np.sum((w - restored) ** 2))


def test_each_measured_rate_is_what_quantizing_at_it_measures(rng):
    w = (rng.standard_t(3, (300, 200)) * 0.02).astype(np.float32)  # heavy tails: the rule cannot foresee them
    got = nuq.bit_rate_of(w, 25.0, measure=True)
    measured = got["measured"]
    for rate in measured["rates"]:
        assert rate["sqnr_ex_db"] == pytest.approx(_sqnr_db(w, rate["bits"]), abs=1e-6), rate["bits"]
        assert rate["lowest_sqnr_ex_db"] == rate["sqnr_ex_db"] and rate["lowest_tensor"] == "tensor"
    bits = measured["bits"]
    assert bits is not None and _sqnr_db(w, bits) >= 25.0
    if bits > 1:
        assert _sqnr_db(w, bits - 1) < 25.0
    centred = w.astype(np.float64) - w.mean()
    kurtosis = np.mean(centred ** 4) / np.mean(centred ** 2) ** 2 - 3.0
    assert measured["excess_kurtosis"]["tensor"] == pytest.approx(kurtosis, rel=1e-4)
    # Without measure, the rule alone, as nuq.bit_rate gives it at the weights' rms (centred: mean 0).
    alone = nuq.bit_rate_of(w, 25.0)
    assert "measured" not in alone
    assert alone["from_db"] == pytest.approx(20.0 * math.log10(np.sqrt(np.mean(w.astype(np.float64) ** 2))), abs=1e-9)


def test_what_bit_rate_of_refuses(rng):
    w = rng.laplace(0.0, 0.1, (32, 32)).astype(np.float32)
    with pytest.raises(TypeError, match="skip and quantize_vectors choose among a state dict's tensors"):
        nuq.bit_rate_of(w, 30.0, skip="x")
    with pytest.raises(TypeError, match="numpy array, a PyTorch tensor or a state dict"):
        nuq.bit_rate_of("w", 30.0)
    with pytest.raises(TypeError, match="sqnr_min_db must be a number"):
        nuq.bit_rate_of(w, "30")
    with pytest.raises(ValueError, match="sqnr_min_db must be a finite number"):
        nuq.bit_rate_of(w, math.nan)
    with pytest.raises(ValueError, match="min_bits 9 is above max_bits 8"):
        nuq.bit_rate_of(w, 30.0, min_bits=9, max_bits=8)
    with pytest.raises(ValueError, match=r"bit_rate_of: min_bits and max_bits lie in 1\.\.16, got 0 and 16"):
        nuq.bit_rate_of(w, 30.0, min_bits=0)
    with pytest.raises(TypeError, match="measure must be True or False, not 'no'"):
        nuq.bit_rate_of(w, 30.0, measure="no")
    with pytest.raises(ValueError, match="is empty"):
        nuq.bit_rate_of(np.zeros((0, 4), np.float32), 30.0)
    with pytest.raises(ValueError, match="every weight is zero"):
        nuq.bit_rate_of(np.zeros((4, 4), np.float32), 30.0)
    with pytest.raises(ValueError, match="no tensor to quantize"):
        nuq.bit_rate_of({"norm.weight": np.ones(8, np.float32)}, 30.0)
    w[3, 5] = np.nan
    with pytest.raises(ValueError, match=r"tensor 'tensor'.*nan"):
        nuq.bit_rate_of(w, 30.0)
    saturated = nuq.bit_rate_of(w, 30.0, nonfinite="saturate", measure=True)
    assert saturated["weights"]["count"] == 32 * 32 - 1
    assert saturated["measured"]["bits"] is not None
    # float64 is judged as the float32 quantize would take.
    x = rng.laplace(0.0, 0.1, (16, 16))
    assert nuq.bit_rate_of(x, 30.0) == nuq.bit_rate_of(x.astype(np.float32), 30.0)


def test_no_rate_is_told_why_by_the_rule_and_by_the_measurement(rng):
    w = rng.laplace(0.0, 0.1, (64, 64)).astype(np.float32)
    got = nuq.bit_rate_of(w, 200.0, measure=True)
    assert got["bits"] is None and got["worst_sqnr_db"] is None
    assert got["reason"].startswith("no rate up to 16 bits keeps SQNR >= 200.00 dB: at R = 16 the worst is ")
    assert "(granular noise: the weights are small against the step even at 16 bits" in got["reason"]
    measured = got["measured"]
    assert measured["bits"] is None
    assert measured["reason"].startswith("no rate up to 16 bits keeps SQNR >= 200.00 dB as measured: at R = 16 ")
    assert "(granular noise: the last bit gained " in measured["reason"]
    assert [r["bits"] for r in measured["rates"]] == [15, 16]  # the top rate, and the one below for the last bit's gain
    assert nuq.bit_rate_of(w, 20.0)["reason"] is None
    constant = {"w.weight": w, "c.weight": np.full((8, 8), 0.25, np.float32)}
    assert nuq.bit_rate_of(constant, 20.0)["weights"]["constant_tensors"] == ["c.weight"]


def test_warnings_name_the_callers_line(rng):
    """quantize_state_dict's and bit_rate_of's warnings (a skip pattern naming nothing, a float64
    tensor kept) point at the line that called them."""
    w = rng.laplace(0.0, 0.1, (16, 16)).astype(np.float32)
    codebook = nuq.design("uniform", 4)
    calls = [lambda: nuq.quantize_state_dict({"a.weight": w}, codebook, skip="zz*"),
             lambda: nuq.quantize_state_dict({"a.weight": w, "b.weight": w.astype(np.float64)}, codebook),
             lambda: nuq.bit_rate_of({"a.weight": w}, 20.0, skip="zz*"),
             lambda: nuq.bit_rate_of({"a.weight": w, "b.weight": w.astype(np.float64)}, 20.0)]
    for call in calls:
        with pytest.warns(UserWarning) as caught:
            call()
        assert [(record.filename, record.lineno) for record in caught] == [(__file__, call.__code__.co_firstlineno)]
