"""nuq.quantize, dequantize and qgemm on numpy arrays, against references computed here."""

import json
import struct

import numpy as np
import pytest

import nuq


def unpack(packed: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """The layout of packed.h read independently: LSB-first codes, every row byte-aligned."""
    per_byte = 8 // bits if bits <= 8 else 1
    if bits == 16:
        return packed.view("<u2")[:, :cols].astype(np.uint32)
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    codes = (packed[:, :, None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0], -1)[:, :cols].astype(np.uint32)


@pytest.mark.parametrize("method", ["sptq", "msptq", "uniform"])
def test_sqnr_ex_of_a_million_laplacian_samples_meets_sqnr_th(method, rng):
    w = rng.laplace(scale=1 / np.sqrt(2), size=(1000, 1000)).astype(np.float32)  # unit variance
    c = nuq.design(method)
    q = nuq.quantize(w, c)
    assert abs(q.sqnr_ex_db - c.sqnr_db) < 0.1
    assert q.stats["count"] == 10**6 and abs(q.stats["std"] - 1) < 0.01
    # The share inside the support region is the Laplacian's P(|X| <= xmax) = 1 - exp(-sqrt(2) xmax).
    assert q.within == pytest.approx(100 * (1 - np.exp(-np.sqrt(2) * c.xmax)), abs=0.2)


@pytest.mark.parametrize("shape", [(7, 13), (3, 4, 5), (33,)])
@pytest.mark.parametrize("normalise", ["global", "per-tensor", "per-channel", "none"])
def test_codes_follow_the_codebook_rule(shape, normalise, rng):
    w = (3 + 2 * rng.laplace(size=shape)).astype(np.float32)
    c = nuq.design("msptq")
    q = nuq.quantize(w, c, normalise=normalise)
    rows = shape[0] if len(shape) > 1 else 1
    cols = w.size // rows
    assert q.shape == shape and (q.rows, q.cols, q.bits) == (rows, cols, 2)
    codes = unpack(q.codes, q.bits, cols)
    np.testing.assert_array_equal(codes, q.unpacked_codes())
    view = w.reshape(rows, cols).astype(np.float64)
    if normalise == "per-channel":
        mean, scale = view.mean(axis=1, keepdims=True), view.std(axis=1, keepdims=True)
        assert q.levels.shape == (rows, 4)
    elif normalise == "none":
        mean, scale = 0.0, 1.0
        np.testing.assert_array_equal(q.levels[0], c.levels.astype(np.float32))
    else:
        mean, scale = view.mean(), view.std()
        assert (q.mean, q.scale) == pytest.approx((mean, scale), rel=1e-6)
    expected = np.searchsorted(c.thresholds, (view - mean) / scale, side="right")
    # float32 thresholds in the weights' units may differ from float64 ones within rounding.
    near = np.min(np.abs(((view - mean) / scale)[..., None] - c.thresholds), axis=-1) < 1e-5
    assert np.all((codes == expected) | near)
    levels = q.levels if q.levels.shape[0] > 1 else np.repeat(q.levels, rows, axis=0)
    np.testing.assert_array_equal(q.dequantize(), np.take_along_axis(levels, codes, axis=1).reshape(shape))
    np.testing.assert_allclose(levels, np.broadcast_to(mean + scale * c.levels[None, :], levels.shape),
                               rtol=1e-5, atol=1e-5)


def test_high_rate_uniform_grid_and_sixteen_bit_codes(rng):
    w = rng.laplace(size=(8, 40)).astype(np.float32)
    q = nuq.quantize(w, nuq.design("uniform", 16), normalise="per-tensor")
    assert q.bits == 16 and q.grid is not None
    offset, scale = q.grid
    codes = unpack(q.codes, 16, 40)
    np.testing.assert_allclose(q.dequantize(), offset + scale * codes, rtol=0, atol=2 ** -20 * np.abs(q.levels).max())
    assert q.max_error < scale  # within a step everywhere (the optimal support holds these weights)


@pytest.mark.parametrize("bits,normalise", [(8, "per-tensor"), (12, "none"), (16, "global"), (16, "none")])
def test_the_grid_of_a_uniform_design_is_the_one_its_file_stores(bits, normalise, rng, tmp_path):
    """grid is the design's (offset, scale), as a file's .grid holds it (not a fit to the float32
    levels, which put a level off by an ulp in half the codes): every level is float32(offset +
    scale * code) taken in double, and nuq.load of the file gives the same grid."""
    w = (rng.laplace(size=(6, 128)) * 0.02).astype(np.float32)
    q = nuq.quantize(w, nuq.design("uniform", bits), normalise=normalise)
    offset, scale = q.grid
    codes = np.arange(q.levels.shape[1], dtype=np.float64)
    np.testing.assert_array_equal(q.levels[0], (offset + scale * codes).astype(np.float32))
    nuq.save(tmp_path / "q.safetensors", {"w": q})
    assert nuq.load(tmp_path / "q.safetensors")["w"].grid == q.grid
    if q.bits == 16:  # the file stores it: [offset, scale] as F64
        data = open(tmp_path / "q.safetensors", "rb").read()
        (n,) = struct.unpack("<Q", data[:8])
        entry = json.loads(data[8:8 + n])["w.grid"]
        stored = np.frombuffer(data[8 + n + entry["data_offsets"][0]:8 + n + entry["data_offsets"][1]], "<f8")
        assert tuple(stored) == q.grid


@pytest.mark.parametrize("m,rows,cols", [(1, 5, 7), (3, 64, 96), (17, 33, 129)])
def test_qgemm_matches_the_dequantized_product(m, rows, cols, rng):
    w = rng.laplace(size=(rows, cols)).astype(np.float32)
    for normalise in ("global", "per-channel"):
        q = nuq.quantize(w, nuq.design("sptq"), normalise=normalise)
        x = rng.standard_normal((m, cols)).astype(np.float32)
        bias = rng.standard_normal(rows).astype(np.float32)
        reference = x.astype(np.float64) @ q.dequantize().T.astype(np.float64) + bias
        y = nuq.qgemm(x, q, bias)
        assert y.shape == (m, rows) and y.dtype == np.float32 and np.any(y != 0)
        np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    assert nuq.qgemm(x[0], q).shape == (rows,)  # a vector in, a vector out


@pytest.mark.parametrize("bits,group_size", [(2, None), (4, None), (1, 128), (2, 128), (4, 64), (8, 128)])
def test_repeated_cpu_products_are_the_same_before_and_after_the_layout(bits, group_size, rng):
    """A tensor's second CPU product lays its codes out for the look-up and keeps them: products
    before and after, of every batch, on the tensor and on copies of it, are the same bit for bit."""
    import copy
    import pickle
    w = rng.laplace(size=(40, 256)).astype(np.float32)
    q = nuq.quantize(w, nuq.design("msptq" if bits == 2 else "uniform", bits), group_size=group_size)
    xs = [rng.standard_normal((m, 256)).astype(np.float32) for m in (1, 3, 4, 9, 300)]
    first = [nuq.qgemm(x, q, device="cpu") for x in xs]
    for x, y in zip(xs, first):
        reference = x.astype(np.float64) @ q.dequantize().astype(np.float64).T
        np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    for other in (q, copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        for x, y in zip(reversed(xs), reversed(first)):
            np.testing.assert_array_equal(nuq.qgemm(x, other, device="cpu"), y)
    copied = copy.copy(q)
    del q
    np.testing.assert_array_equal(nuq.qgemm(xs[0], copied, device="cpu"), first[0])


def test_state_dict_with_global_normalisation_uses_all_tensors(rng):
    sd = {"a.weight": rng.laplace(size=(16, 8)).astype(np.float32),
          "a.bias": rng.laplace(size=16).astype(np.float32),
          "b.weight": 5 * rng.laplace(size=(4, 16)).astype(np.float32),
          "steps": np.array([3], dtype=np.int64)}
    out = nuq.quantize_state_dict(sd, nuq.design("msptq"), skip="*.bias")
    assert out["a.bias"] is sd["a.bias"] and out["steps"] is sd["steps"]
    assert isinstance(out["a.weight"], nuq.QuantizedTensor) and isinstance(out["b.weight"], nuq.QuantizedTensor)
    both = np.concatenate([sd["a.weight"].ravel(), sd["b.weight"].ravel()]).astype(np.float64)
    for name in ("a.weight", "b.weight"):
        assert (out[name].mean, out[name].scale) == pytest.approx((both.mean(), both.std()), rel=1e-6)
    only_a = nuq.quantize_state_dict(sd, nuq.design("msptq"), skip=lambda name, t: name != "a.weight")
    assert set(k for k, v in only_a.items() if isinstance(v, nuq.QuantizedTensor)) == {"a.weight"}
    restored = nuq.dequantize_state_dict(out)
    assert restored["a.weight"].shape == (16, 8) and restored["steps"] is sd["steps"]


def test_strided_input_is_quantized_as_its_values(rng):
    w = rng.laplace(size=(20, 30)).astype(np.float32)
    c = nuq.design("sptq")
    np.testing.assert_array_equal(nuq.quantize(w.T, c).codes, nuq.quantize(np.ascontiguousarray(w.T), c).codes)


def test_float16_is_widened_exactly(rng):
    w16 = rng.laplace(size=(9, 11)).astype(np.float16)
    c = nuq.design("msptq")
    np.testing.assert_array_equal(nuq.quantize(w16, c).codes, nuq.quantize(w16.astype(np.float32), c).codes)
    assert nuq.quantize(w16, c).dtype == "F16"


@pytest.mark.parametrize("call,message", [
    (lambda w, c: nuq.quantize(w, c, group_size=64), "do not split into groups of 64"),
    (lambda w, c: nuq.quantize(w, c, normalise="rows"), "unknown normalisation"),
    (lambda w, c: nuq.quantize(w.astype(np.int32), c), "cannot be quantized"),
    (lambda w, c: nuq.quantize(np.where(w > 1, np.nan, w).astype(np.float32), c, name="layer"), "layer"),
    (lambda w, c: nuq.quantize(np.ones((3, 3), np.float32), c), "zero variance"),
    (lambda w, c: nuq.quantize(w, nuq.design("uniform", 16), normalise="per-channel"), "per-channel"),
    (lambda w, c: nuq.quantize(w, c, device="tpu"), "tpu"),
    (lambda w, c: nuq.quantize(w, c, nonfinite="ignore"), "nonfinite"),
    (lambda w, c: nuq.qgemm(np.ones((2, 5), np.float32), nuq.quantize(w, c)), "input columns"),
    (lambda w, c: nuq.qgemm(np.ones((2, 8), np.float32), nuq.quantize(w, c), np.ones(3, np.float32)), "bias"),
    (lambda w, c: nuq.load("/nonexistent/model.safetensors"), "nonexistent"),
])
def test_user_errors_are_value_errors(call, message, rng):
    w = rng.laplace(size=(6, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        call(w, nuq.design("sptq"))


def test_nonfinite_weights_saturate_when_asked(rng):
    w = rng.laplace(size=(4, 8)).astype(np.float32)
    w[0, 0], w[1, 1] = np.inf, np.nan
    q = nuq.quantize(w, nuq.design("sptq"), nonfinite="saturate")
    assert q.stats["nonfinite"] == 2 and q.stats["count"] == 30
    assert q.dequantize()[0, 0] == q.levels[0].max()


def test_qgemm_on_cuda_without_a_device_is_an_error_not_the_cpu(rng):
    if any(name.startswith("cuda") for name in nuq.devices()):
        pytest.skip("a CUDA device is visible")
    q = nuq.quantize(rng.laplace(size=(8, 64)).astype(np.float32), nuq.design("msptq"))
    x = np.ones((2, 64), np.float32)
    for _ in range(3):  # before and after the CPU's products would have laid q out
        with pytest.raises(ValueError, match="cuda"):
            nuq.qgemm(x, q, device="cuda")
        nuq.qgemm(x, q, device="cpu")
    np.testing.assert_array_equal(nuq.qgemm(x, q), nuq.qgemm(x, q, device="cpu"))  # auto: the CPU


def test_cuda_backend_gives_the_cpu_codes_and_products(rng):
    if not any(name.startswith("cuda") for name in nuq.devices()):
        pytest.skip("this build has no CUDA backend or no GPU is visible")
    w = rng.laplace(size=(96, 200)).astype(np.float32)
    x = rng.standard_normal((4, 200)).astype(np.float32)
    for normalise in ("global", "per-channel"):
        cpu = nuq.quantize(w, nuq.design("msptq"), normalise=normalise, device="cpu")
        gpu = nuq.quantize(w, nuq.design("msptq"), normalise=normalise, device="cuda")
        np.testing.assert_array_equal(gpu.codes, cpu.codes)
        first = nuq.qgemm(x, gpu, device="cuda")  # uploads the codes, which then stay on the device
        np.testing.assert_allclose(first, nuq.qgemm(x, cpu, device="cpu"), rtol=1e-4, atol=1e-4)
        for m in (1, 4, 70):  # from the kept copy: the same kernels' results for the same rows
            xm = rng.standard_normal((m, 200)).astype(np.float32)
            np.testing.assert_allclose(nuq.qgemm(xm, gpu, device="cuda"), nuq.qgemm(xm, cpu, device="cpu"),
                                       rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(nuq.qgemm(x, gpu, device="cuda"), first)
        np.testing.assert_array_equal(nuq.qgemm(x, gpu), first)  # auto on a GPU machine: the same copy


def test_a_signal_stops_a_state_dicts_quantization_between_tensors(rng):
    """A Ctrl-C (here an alarm whose handler raises) is acted on after the tensor in hand, not when
    the whole state dict is done."""
    import signal
    import time
    state_dict = {f"l{i}.weight": rng.laplace(size=(1024, 1024)).astype(np.float32) for i in range(16)}
    codebook = nuq.design("lloyd-max", 8)  # per channel, a table of 256 levels a row: slow enough to see
    start = time.perf_counter()
    nuq.quantize_state_dict(state_dict, codebook, normalise="per-channel")
    whole = time.perf_counter() - start
    if whole < 0.2:
        pytest.skip(f"the whole state dict took {whole:.3f} s: too fast to interrupt part way")

    class Stop(Exception):
        pass

    handled = []

    def handler(signum, frame):
        handled.append(time.perf_counter())
        raise Stop

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, whole / 16)
        with pytest.raises(Stop):
            nuq.quantize_state_dict(state_dict, codebook, normalise="per-channel")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert handled[0] - start < whole / 2, (handled[0] - start, whole)


def test_float64_is_quantized_as_its_float32_rounding(rng):
    # numpy's default dtype (what rng.laplace returns): the same codes, statistics and SQNR as the
    # float32 array it rounds to, in a float32 result.
    w64 = rng.laplace(scale=0.05, size=(64, 96))
    c = nuq.design("msptq")
    for normalise in ("global", "per-channel"):
        q64, q32 = nuq.quantize(w64, c, normalise=normalise), nuq.quantize(w64.astype(np.float32), c, normalise=normalise)
        np.testing.assert_array_equal(q64.codes, q32.codes)
        assert q64.dtype == "F32" and q64.dequantize().dtype == np.float32
        assert q64.sqnr_ex_db == q32.sqnr_ex_db and q64.stats == q32.stats


def test_float64_beyond_float32s_range_is_named_not_called_infinite(rng):
    w64 = rng.laplace(size=(8, 16))
    w64[3, 5] = -1e300  # finite, but float32 would round it to -inf
    for nonfinite in ("error", "saturate"):  # saturating is for NaN and Inf the caller had
        with pytest.raises(ValueError, match=r"tensor 'layer' element \[3, 5\] is -1e\+300, beyond float32's range"):
            nuq.quantize(w64, nuq.design("msptq"), name="layer", nonfinite=nonfinite)
    w64[3, 5] = np.inf  # a real infinity stays one
    with pytest.raises(ValueError, match="inf"):
        nuq.quantize(w64, nuq.design("msptq"), name="layer")


def test_the_public_functions_are_nuqs_wherever_they_are_defined():
    import pickle
    for name in ("quantize", "quantize_state_dict", "dequantize_state_dict", "load", "load_metadata", "save",
                 "to_float32", "qgemm"):
        function = getattr(nuq, name)
        assert function.__module__ == "nuq", name
        assert pickle.loads(pickle.dumps(function)) is function, name
