"""The companion paper's variance mismatch and bit-rate rule through Python (nuq.mismatch,
nuq.bit_rate, nuq.worst_sqnr): the CLI's numbers, the design's own SQNR at no mismatch, the
granular regime's 1 dB per dB, the rule against a search over every rate, and the unnormalised
weights' rate measured by quantizing them."""

import json
import math
import subprocess

import numpy as np
import pytest

import nuq


@pytest.mark.parametrize("bits", [4, 9, 12, 16])
def test_mismatch_is_the_clis_and_meets_the_design_at_no_mismatch(bits, nuq_cli):
    curve = nuq.mismatch(bits, -30, 30, 5)
    printed = json.loads(nuq_cli("mismatch", "--bits", bits, "--range=-30:30", "--step", 5, "--json"))["points"]
    assert len(printed) == len(curve["sqnr_db"]) == 13
    for key in ("mismatch_db", "sigma", "sqnr_db", "approx_sqnr_db", "overload_share"):
        np.testing.assert_array_equal(curve[key], [p[key] for p in printed], err_msg=key)
    at_zero = int(np.flatnonzero(curve["mismatch_db"] == 0.0)[0])
    assert curve["sigma"][at_zero] == 1.0
    assert curve["sqnr_db"][at_zero] == pytest.approx(nuq.design("uniform", bits, rule="iterative").sqnr_db, abs=1e-9)
    # Below sigma_ref, while sigma is large against the step, the distortion is the step's,
    # Delta^2/12: SQNR falls 1 dB per dB of mismatch.
    if bits >= 12:
        assert curve["sqnr_db"][0] - curve["sqnr_db"][1] == pytest.approx(-5.0, abs=0.02)
    # Above it overload takes over the distortion, and the SQNR collapses.
    assert curve["overload_share"][-1] > 0.99 and curve["sqnr_db"][-1] < 5.0


@pytest.mark.parametrize("floor,start,stop", [(40.0, -30.0, 0.0), (30.0, -20.0, 10.0), (55.0, -12.0, -12.0),
                                               (20.0, 5.0, 8.0)])
def test_bit_rate_is_the_smallest_rate_whose_worst_keeps_the_floor(floor, start, stop, nuq_binary):
    choice = nuq.bit_rate(floor, start, stop)
    worst = [nuq.worst_sqnr(bits, start, stop) for bits in range(1, 17)]
    keeping = [w for w in worst if w["worst_sqnr_db"] >= floor]
    run = subprocess.run([nuq_binary, "bitrate", "--sqnr-min", str(floor), f"--range={start}:{stop}", "--json"],
                         capture_output=True, text=True)
    assert run.returncode == (0 if choice else 1), run.stderr  # no rate: exit status 1, the reason on stderr
    printed = json.loads(run.stdout)
    if not keeping:
        assert choice is None and printed["bits"] is None
        return
    assert choice == keeping[0]
    assert choice["bits"] == printed["bits"]
    assert all(w["worst_sqnr_db"] < floor for w in worst[:choice["bits"] - 1])
    assert choice["worst_at_db"] in (start, stop)  # SQNR falls both ways from sigma_ref: the worst is at an end


def test_bit_rate_at_a_weights_rms_is_measured_by_quantizing_them(rng):
    # Unnormalised weights meet the unit-variance design at their rms: the rate chosen there keeps
    # the floor when the weights are quantized with normalise="none".
    w = rng.laplace(0.0, 0.05 / math.sqrt(2.0), size=(512, 512)).astype(np.float32)
    at = 20.0 * math.log10(math.sqrt(float(np.mean(np.square(w, dtype=np.float64)))))
    choice = nuq.bit_rate(35.0, at)
    assert choice is not None
    q = nuq.quantize(w, nuq.design("uniform", choice["bits"], rule="iterative"), normalise="none")
    assert q.sqnr_ex_db >= 35.0
    assert q.sqnr_ex_db == pytest.approx(choice["worst_sqnr_db"], abs=0.15)
    one_less = nuq.quantize(w, nuq.design("uniform", choice["bits"] - 1, rule="iterative"), normalise="none")
    assert one_less.sqnr_ex_db < 35.0


@pytest.mark.parametrize("call,message", [
    (lambda: nuq.mismatch(17, 0, 1), "bits must be 1..16"),
    (lambda: nuq.mismatch(4, 0, 10, 0), "the step must be positive"),
    (lambda: nuq.mismatch(4, 0, 300), "above 200 dB"),
    (lambda: nuq.bit_rate(float("nan"), 0), "must be a finite number"),
    (lambda: nuq.bit_rate(30, 0, -1), "from <= to"),
    (lambda: nuq.bit_rate(30, 0, min_bits=5, max_bits=4), "1 <= min <= max <= 16"),
    (lambda: nuq.worst_sqnr(0, 0), "bits must be 1..16"),
    (lambda: nuq.worst_sqnr(16, -100, 100, step_db=0.002), "^worst_sqnr: more than 100000 points"),  # (not mismatch)
    (lambda: nuq.worst_sqnr(4, 5, 0), "^worst_sqnr: the range must be finite with from <= to"),
    (lambda: nuq.mismatch(16, -200, 200, 0.005), "points times 65536 levels"),
    (lambda: nuq.bit_rate(40, -30, 30, step_db=0.0007), "points times 131070 levels"),
])
def test_bad_arguments_are_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
