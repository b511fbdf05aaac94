"""Codebooks through Python against the published numbers (include/nuq/paper.h, read through nuq.paper)."""

import json
import re

import numpy as np
import pytest

import nuq

paper = nuq.paper


def printed_xmax(case: dict) -> float:
    # As host/theory.cpp: the paper evaluates 3Δ and 3Δmod at its printed steps (3 × 0.8504,
    # 3 × 0.9021), not at the unrounded iterates; the other rules come from the weights' range.
    if case["support"] == "3delta":
        return case["alpha"] * paper.SPTQ_XMAX
    if case["support"] == "3delta-mod":
        return case["alpha"] * paper.MSPTQ_XMAX
    return nuq.support_xmax(case["support"], *paper.MNIST_MLP_RANGE, alpha=case["alpha"])


@pytest.mark.parametrize("column", paper.table2(), ids=lambda c: c["label"])
def test_table2_sptq_iterations_and_step(column):
    c = nuq.design("sptq", init=column["delta0"])
    assert c.iterations == column["iterations"]
    assert len(c.trace) == c.iterations + 1 and c.trace[0] == pytest.approx(column["delta0"])
    assert abs(c.xmax / 3 - paper.SPTQ_DELTA) <= 0.5e-4  # rounds to the printed Δ
    assert c.rule == "iterative" and c.method == "sptq"


def test_msptq_converges_as_published():
    c = nuq.design("msptq")
    assert c.iterations == paper.MSPTQ_ITERATIONS
    assert abs(c.xmax / 3 - paper.MSPTQ_DELTA) <= 0.5e-4


def test_table5_sqnr_th():
    (table,) = [t for t in paper.tables() if t["id"] == "5"]
    assert table["method"] == "msptq" and len(table["cases"]) == 4
    for case in table["cases"]:
        c = nuq.design("msptq", table["bits"], xmax=printed_xmax(case))
        assert c.sqnr_db == pytest.approx(case["sqnr_th"], abs=1e-4), case["label"]


def test_every_sqnr_th_of_tables_3_to_7():
    checked = 0
    for table in paper.tables():
        for case in table["cases"]:
            c = nuq.design(table["method"], table["bits"], xmax=printed_xmax(case))
            assert c.sqnr_db == pytest.approx(case["sqnr_th"], abs=1e-4), (table["id"], case["label"])
            checked += 1
    assert checked == 32


def test_lloyd_max_ceiling_rounds_to_the_literature():
    assert round(nuq.design("lloyd-max", 2).sqnr_db, 2) == paper.LLOYD_MAX_4_SQNR


@pytest.mark.parametrize("method,bits,levels", [("uniform", 4, 16), ("sptq", 2, 4), ("msptq", 2, 4),
                                                ("ternary", 2, 3), ("mulaw", 2, 4), ("lloyd-max", 3, 8)])
def test_every_method_gives_a_consistent_codebook(method, bits, levels):
    c = nuq.design(method, bits)
    assert c.bits == bits and c.levels.shape == (levels,) and c.thresholds.shape == (levels - 1,)
    assert np.all(np.diff(c.levels) > 0) and np.all(np.diff(c.thresholds) > 0)
    np.testing.assert_allclose(c.levels, -c.levels[::-1], atol=1e-12)  # symmetric designs
    assert c.distortion == pytest.approx(c.granular + c.overload)
    assert c.sqnr_db == pytest.approx(10 * np.log10(1 / c.distortion))
    # The reference rule: each cell's inside goes to its level.
    inside = (c.thresholds[:-1] + c.thresholds[1:]) / 2
    assert c.quantize_values(list(inside)) == pytest.approx(list(c.levels[1:-1]))


def test_levels_and_bits_agree_as_nuq_design_takes_them(nuq_cli):
    # levels alone: the narrowest width that holds them, as `nuq design -N`; with bits, the same width
    # or an error, where bits=8, levels=9 once gave a 4-bit codebook silently.
    for levels in (3, 9, 16, 17):
        ours = nuq.design("uniform", levels=levels)
        cli = json.loads(nuq_cli("design", "-m", "uniform", "-N", levels, "--json"))
        assert ours.bits == cli["codebook"]["bits"] and ours.levels.shape == (levels,)
        assert nuq.design("uniform", ours.bits, levels=levels).bits == ours.bits
    for bits, levels in ((8, 9), (16, 3), (2, 5)):
        with pytest.raises(ValueError, match=re.escape(f"levels={levels} are coded in ")):
            nuq.design("uniform", bits, levels=levels)


def test_sigma_scales_the_design():
    unit, scaled = nuq.design("sptq"), nuq.design("sptq", sigma=0.05)
    np.testing.assert_allclose(scaled.levels, 0.05 * unit.levels, rtol=1e-6)
    assert scaled.sqnr_db == pytest.approx(unit.sqnr_db, abs=1e-6)


def test_codebook_json_round_trip():
    c = nuq.design("mulaw", mu=100.0)
    back = nuq.Codebook.from_json(c.to_json())
    np.testing.assert_array_equal(back.levels, c.levels)
    assert back.mu == 100.0 and json.loads(c.to_json())["method"] == "mulaw"


def test_codebook_from_the_json_a_quantized_file_records(tmp_path, rng):
    # Above 256 levels a file records a uniform design by its parameters alone (docs/format.md).
    for bits in (2, 12, 16):
        design = nuq.design("uniform", bits=bits)
        path = tmp_path / f"u{bits}.safetensors"
        nuq.save(path, {"w": nuq.quantize(rng.laplace(size=(4, 64)).astype(np.float32), design, normalise="none")})
        raw = path.read_bytes()
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        recorded = json.loads(header["__metadata__"]["nuq.quantized"])["codebook"]
        assert ("levels" in recorded) == (bits == 2)
        back = nuq.Codebook.from_json(json.dumps(recorded))
        np.testing.assert_array_equal(back.levels, design.levels)
        np.testing.assert_array_equal(back.thresholds, design.thresholds)


def test_sweep_minimum_is_the_iterative_optimum():
    s = nuq.sweep("sptq", 0.8, 0.9, 0.001)
    best = s["parameter"][np.argmin(s["distortion"])]
    assert abs(best - nuq.design("sptq").xmax / 3) <= 0.001


@pytest.mark.parametrize("call,message", [
    (lambda: nuq.design("nonsense"), "unknown method 'nonsense' (choose one of: uniform, sptq, msptq, ternary, mulaw, "
                                     "lloyd-max)"),
    (lambda: nuq.design("custom"), "custom names a codebook another writer recorded"),  # not offered, then refused
    (lambda: nuq.sweep("custom", 0.5, 1.0, 0.1), "choose one of: uniform, sptq, msptq, ternary, mulaw, lloyd-max)"),
    (lambda: nuq.sweep("lloyd-max", 0.5, 1.0, 0.1), "lloyd-max places every threshold and level itself (the Lloyd "
                                                    "iteration), so it has no x_max to sweep"),
    (lambda: nuq.design("sptq", 0), "bits"),
    (lambda: nuq.design("sptq", xmax=-1.0), "x_max"),
    (lambda: nuq.support_xmax("case1"), "w_min and w_max"),
    (lambda: nuq.Codebook.from_json("{"), "codebook JSON"),
])
def test_user_errors_are_value_errors_with_nuqs_message(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_the_version_is_the_command_lines(nuq_cli):
    # One version, CMake's project(): the module's and the binary's (setup.py's: pip_install.py).
    assert nuq.__version__ and nuq_cli("--version").strip() == f"nuq {nuq.__version__}"
