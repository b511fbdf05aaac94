"""Grouped quantization from Python (group_size): the codes and scales `nuq quantize --group-size`
writes, checked against the CLI, against numpy's own reading of the rule, and through files."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import nuq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import nuq_format  # noqa: E402  (the independent numpy reader of the format)



@pytest.fixture
def checkpoint(rng):
    return {"embed.weight": rng.laplace(size=(40, 256)).astype(np.float32),
            "layers.0.weight": 3 * rng.laplace(size=(16, 8, 16)).astype(np.float32) + 0.5,
            "layers.0.bias": rng.laplace(size=256).astype(np.float32)}


@pytest.mark.parametrize("method,bits,group", [("msptq", 2, 128), ("sptq", 2, 32), ("uniform", 4, 64),
                                               ("mulaw", 8, 128), ("uniform", 1, 64)])
def test_codes_and_scales_identical_to_nuq_quantize_group_size(nuq_cli, tmp_path, checkpoint, method, bits, group):
    nuq.save(tmp_path / "in.safetensors", checkpoint)
    nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", "-m", method,
        "-b", bits, "--group-size", group, "--device", "cpu", "--quantize-vectors")
    codebook = nuq.design(method, bits)
    ours = nuq.quantize_state_dict(checkpoint, codebook, group_size=group, quantize_vectors=True)
    _, _, stored = nuq_format.read(tmp_path / "q.safetensors")
    cli = nuq.load(tmp_path / "q.safetensors")
    for name in checkpoint:
        q = ours[name]
        assert q.group_size == group and q.normalisation == "per-channel" and q.bits == bits
        np.testing.assert_array_equal(stored[name + ".codes"], q.codes)  # the file's [rows, bytes per row]
        rows = q.shape[0] if len(q.shape) >= 2 else 1
        assert (q.rows, q.cols) == (rows, int(np.prod(q.shape)) // rows)
        assert q.unpacked_codes().shape == (q.rows, q.cols) and q.scales.shape == (q.rows, q.cols // group)
        assert q.levels.shape == (q.rows * q.cols // group, 2 ** bits)  # a table per group
        np.testing.assert_array_equal(stored[name + ".scales"], q.scales)
        np.testing.assert_array_equal(cli[name].levels, q.levels)
        np.testing.assert_array_equal(cli[name].dequantize(), q.dequantize())


def test_scales_are_each_groups_rms_about_the_tensor_mean_and_codes_follow_the_codebook(rng):
    w = (rng.laplace(size=(24, 192)) * np.linspace(0.1, 3, 24)[:, None]).astype(np.float32)
    codebook = nuq.design("msptq")
    q = nuq.quantize(w, codebook, group_size=64)
    groups = w.astype(np.float64).reshape(24, 3, 64)
    np.testing.assert_allclose(q.scales, np.sqrt(((groups - w.mean(dtype=np.float64)) ** 2).mean(axis=2)), rtol=1e-6)
    assert q.mean == pytest.approx(w.mean(dtype=np.float64), rel=1e-9, abs=1e-12)
    # numpy's own reading of the rule: (w - mean) / group scale against the normalised thresholds.
    normalised = (groups - q.mean) / q.scales[:, :, None].astype(np.float64)
    codes = np.searchsorted(np.asarray(codebook.thresholds), normalised).reshape(24, 192)
    agree = codes == q.unpacked_codes()
    assert agree.mean() > 0.999, agree.mean()  # only weights within rounding of a threshold may differ
    expected = q.mean + q.scales[:, :, None].astype(np.float64) * np.asarray(codebook.levels)[codes.reshape(24, 3, 64)]
    np.testing.assert_allclose(q.dequantize()[agree], expected.reshape(24, 192)[agree], rtol=1e-6, atol=1e-6)
    assert q.sqnr_ex_db > nuq.quantize(w, codebook).sqnr_ex_db  # rows of different scales: groups help


def test_file_round_trip_read_by_nuq_the_cli_and_the_independent_reader(nuq_cli, tmp_path, checkpoint):
    q = nuq.quantize_state_dict(checkpoint, nuq.design("msptq"), group_size=16, skip="*.bias")
    nuq.save(tmp_path / "g.safetensors", q, metadata={"source": "test"})
    back = nuq.load(tmp_path / "g.safetensors")
    _, metadata, arrays = nuq_format.read(tmp_path / "g.safetensors")
    _, independent = nuq_format.decode(metadata, arrays)
    nuq_cli("dequantize", tmp_path / "g.safetensors", "-o", tmp_path / "restored.safetensors")
    restored = nuq.load(tmp_path / "restored.safetensors")
    np.testing.assert_array_equal(back["layers.0.bias"], checkpoint["layers.0.bias"])
    for name in ("embed.weight", "layers.0.weight"):
        assert back[name].group_size == 16 and back[name].shape == checkpoint[name].shape
        np.testing.assert_array_equal(back[name].codes, q[name].codes)
        np.testing.assert_array_equal(back[name].scales, q[name].scales)
        np.testing.assert_array_equal(back[name].dequantize(), q[name].dequantize())
        np.testing.assert_array_equal(independent[name], q[name].dequantize())
        np.testing.assert_array_equal(restored[name], q[name].dequantize())
    nuq.save(tmp_path / "again.safetensors", back)  # a loaded grouped tensor writes itself again
    assert nuq.load(tmp_path / "again.safetensors")["embed.weight"].scales.tobytes() == q["embed.weight"].scales.tobytes()


def test_two_bits_in_groups_of_128_cost_at_most_2_3_bits_per_weight(tmp_path, rng):
    w = rng.laplace(size=(512, 1024)).astype(np.float32)
    q = nuq.quantize(w, nuq.design("msptq"), group_size=128)
    assert q.nbytes * 8 / w.size == pytest.approx(2 + 32 / 128 + 4 * 32 / w.size)  # codes, scales, 4 levels
    nuq.save(tmp_path / "g.safetensors", {"w": q})
    all_in = (tmp_path / "g.safetensors").stat().st_size * 8 / w.size  # header and metadata included
    assert 2.25 < all_in <= 2.3, all_in


def test_grouped_qgemm_is_the_product_with_the_dequantized_weights(rng):
    w = rng.laplace(size=(70, 96)).astype(np.float32)
    q = nuq.quantize(w, nuq.design("msptq"), group_size=32)
    for m in (1, 5, 130):
        x = rng.standard_normal((m, 96)).astype(np.float32)
        bias = rng.standard_normal(70).astype(np.float32)
        reference = x.astype(np.float64) @ q.dequantize().astype(np.float64).T + bias
        np.testing.assert_allclose(nuq.qgemm(x, q, bias), reference, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="on the CPU"):
        nuq.qgemm(np.ones((1, 96), np.float32), q, device="cuda")


@pytest.mark.parametrize("call,message", [
    (lambda w: nuq.quantize(w, nuq.design("sptq"), group_size=12), "multiple of 8, got 12"),
    (lambda w: nuq.quantize(w, nuq.design("sptq"), group_size=0), "positive multiple of 8"),
    (lambda w: nuq.quantize(w, nuq.design("sptq"), group_size=48), "do not split into groups of 48"),
    (lambda w: nuq.quantize(w, nuq.design("sptq"), group_size=32, normalise="global"), "cannot be combined"),
    (lambda w: nuq.quantize(w, nuq.design("uniform", 16), group_size=32), "up to 256 levels \\(8-bit codes\\)"),
    (lambda w: nuq.quantize_state_dict({"a": w, "c": w[:, :36], "b": w[:, :40]}, nuq.design("sptq"), group_size=16),
     r"the rows of 2 tensor\(s\) do not split into groups of 16: 'b', 'c'; keep them as they are with "
     r"skip=re.compile\('\^\(b\|c\)\$'\)"),
])
def test_bad_group_sizes_are_value_errors_as_the_cli_gives(call, message, rng):
    w = rng.laplace(size=(6, 64)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        call(w)


def test_cli_refuses_the_same_group_sizes(nuq_binary, tmp_path, rng):
    nuq.save(tmp_path / "w.safetensors", {"w": rng.laplace(size=(6, 64)).astype(np.float32)})
    for group, message in ((12, "multiple of 8, got 12"), (48, "do not split into groups of 48")):
        result = subprocess.run([nuq_binary, "quantize", str(tmp_path / "w.safetensors"), "-o",
                                 str(tmp_path / "q.safetensors"), "--group-size", str(group)],
                                capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        with pytest.raises(ValueError, match=message):
            nuq.quantize(rng.laplace(size=(6, 64)).astype(np.float32), nuq.design("msptq"), group_size=group)


@pytest.mark.parametrize("method,bits,group", [("mulaw", 7, 8), ("msptq", 2, 16), ("uniform", 4, 32), ("lloyd-max", 3, 8)])
def test_the_reported_error_is_that_of_the_weights_a_reader_restores(rng, method, bits, group):
    """A grouped tensor's levels are restored from the F32 normalised levels the file stores: the
    largest error and SQNR_ex are measured against those, not against the design's doubles."""
    w = (rng.laplace(size=(64, 512)) * np.linspace(0.2, 4, 64)[:, None]).astype(np.float32)
    q = nuq.quantize(w, nuq.design(method, bits), group_size=group)
    error = w.astype(np.float64) - q.dequantize().astype(np.float64)
    assert q.max_error == np.abs(error).max()
    expected_db = 10 * np.log10((w.astype(np.float64) ** 2).sum() / (error ** 2).sum())
    assert q.sqnr_ex_db == pytest.approx(expected_db, abs=1e-6)
