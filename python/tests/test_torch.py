"""PyTorch tensors in and out: float32, float16 and bfloat16 on the CPU, CUDA where a GPU is visible."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # Debian's python3-torch; scripts/setup installs it

import nuq  # noqa: E402


@pytest.fixture
def weights():
    return torch.from_numpy(np.random.default_rng(3).laplace(size=(32, 48)).astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_tensors_quantize_as_their_float32_values(weights, dtype):
    c = nuq.design("msptq")
    t = weights.to(dtype)
    q = nuq.quantize(t, c, normalise="per-channel")
    reference = nuq.quantize(t.float().numpy(), c, normalise="per-channel")
    np.testing.assert_array_equal(q.codes, reference.codes)
    np.testing.assert_array_equal(q.levels, reference.levels)
    assert q.dtype == {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
    back = q.dequantize()
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32 and back.shape == t.shape
    np.testing.assert_array_equal(back.numpy(), reference.dequantize())


def test_float64_tensors_quantize_as_their_float32_rounding(weights):
    c = nuq.design("msptq")
    t = (weights.double() * (1 + 1e-12)).requires_grad_()  # values float32 rounds back to the weights
    q = nuq.quantize(t, c)
    np.testing.assert_array_equal(q.codes, nuq.quantize(weights, c).codes)
    back = q.dequantize()
    assert q.dtype == "F32" and isinstance(back, torch.Tensor) and back.dtype == torch.float32
    t = weights.double()
    t[2, 7] = 1e39  # finite in float64, infinite in float32
    with pytest.raises(ValueError, match=r"element \[2, 7\] is 1e\+39, beyond float32's range"):
        nuq.quantize(t, c)


def test_parameters_with_grad_and_qgemm_return_tensors(weights):
    layer = torch.nn.Linear(48, 32)
    with torch.no_grad():
        layer.weight.copy_(weights)
    q = nuq.quantize(layer.weight, nuq.design("sptq"))  # a Parameter that requires grad
    x = torch.randn(5, 48)
    y = nuq.qgemm(x, q, layer.bias)
    assert isinstance(y, torch.Tensor) and y.shape == (5, 32)
    reference = torch.nn.functional.linear(x.double(), q.dequantize().double(), layer.bias.detach().double())
    torch.testing.assert_close(y.double(), reference, rtol=1e-4, atol=1e-4)


def test_state_dict_of_a_model_and_back(weights):
    model = torch.nn.Sequential(torch.nn.Linear(48, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    q = nuq.quantize_state_dict(model.state_dict(), nuq.design("msptq"), normalise="per-channel")
    assert [k for k, v in q.items() if isinstance(v, nuq.QuantizedTensor)] == ["0.weight", "2.weight"]
    model.load_state_dict(nuq.dequantize_state_dict(q))
    torch.testing.assert_close(model[0].weight.detach(), q["0.weight"].dequantize())


def test_cuda_tensors_come_back_on_their_device(weights):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    w = weights.cuda()
    q = nuq.quantize(w, nuq.design("msptq"), device="auto")
    np.testing.assert_array_equal(q.codes, nuq.quantize(weights, nuq.design("msptq"), device="cpu").codes)
    assert q.dequantize().device == w.device
    x = torch.randn(3, 48, device="cuda")
    y = nuq.qgemm(x, q)
    assert y.device == x.device
    torch.testing.assert_close(y, x @ q.dequantize().T, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("normalise,group_size", [("global", None), ("per-channel", None), (None, 128)])
def test_sixteen_bit_tensors_over_several_pieces_match_their_float32_values(normalise, group_size):
    # 3072 x 4096 weights: 12 Mi floats, twelve pieces of the library's 4 MiB; the 16-bit tensors are
    # widened a piece at a time, the float32 one read in place, and everything must agree exactly.
    w = torch.from_numpy(np.random.default_rng(4).laplace(size=(3072, 4096)).astype(np.float32))
    c = nuq.design("msptq")
    for t in (w.bfloat16(), w.half()):
        q = nuq.quantize(t, c, normalise=normalise, group_size=group_size)
        reference = nuq.quantize(t.float().numpy(), c, normalise=normalise, group_size=group_size)
        np.testing.assert_array_equal(q.codes, reference.codes)
        np.testing.assert_array_equal(q.levels, reference.levels)
        if group_size:
            np.testing.assert_array_equal(q.scales, reference.scales)
        assert q.stats == reference.stats and q.sqnr_ex_db == reference.sqnr_ex_db


def test_bfloat16_over_several_pieces_gives_the_codes_of_nuq_quantize(nuq_binary, tmp_path):
    import subprocess
    w = torch.from_numpy(np.random.default_rng(5).laplace(size=(3072, 4096)).astype(np.float32)).bfloat16()
    nuq.save(tmp_path / "w.safetensors", {"w": w})
    for extra, kwargs in (([], {}), (["--group-size", "128"], {"group_size": 128})):
        result = subprocess.run([nuq_binary, "quantize", str(tmp_path / "w.safetensors"), "-o",
                                 str(tmp_path / "q.safetensors"), "-m", "msptq", "--device", "cpu", *extra],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        cli = nuq.load(tmp_path / "q.safetensors")["w"]
        ours = nuq.quantize(w, nuq.design("msptq"), **kwargs)
        np.testing.assert_array_equal(cli.codes, ours.codes)
        np.testing.assert_array_equal(cli.levels, ours.levels)
        if kwargs:
            np.testing.assert_array_equal(cli.scales, ours.scales)


def test_a_loaded_quantized_state_dict_goes_into_a_torch_model(tmp_path):
    """nuq.load -> dequantize_state_dict(as_torch=True) -> load_state_dict: every value a torch
    tensor, the restored weights those of the quantized tensors, the kept ones exactly."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 10))
    model = model.to(torch.bfloat16)
    q = nuq.quantize_state_dict(model.state_dict(), nuq.design("msptq"))
    nuq.save(tmp_path / "q.safetensors", q)
    loaded = nuq.load(tmp_path / "q.safetensors")
    with pytest.raises((RuntimeError, TypeError)):  # numpy arrays: what the option is for
        model.load_state_dict(nuq.dequantize_state_dict(loaded))
    restored = nuq.dequantize_state_dict(loaded, as_torch=True)
    assert all(isinstance(v, torch.Tensor) for v in restored.values())
    original = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(restored)
    for name, value in model.state_dict().items():
        if isinstance(loaded[name], nuq.QuantizedTensor):
            expected = torch.from_numpy(loaded[name].dequantize()).to(torch.bfloat16)
        else:
            expected = original[name]  # a bias or norm, kept: bit for bit
        assert torch.equal(value, expected), name


def test_nuq_runs_on_the_threads_it_is_given_whatever_torch_sets():
    """nuq follows OpenMP's thread count unless set_num_threads chose one (PyTorch sets OpenMP's
    count when it loads, to 1 where it counts a single core, and with torch.set_num_threads where it
    shares nuq's OpenMP runtime); a chosen count holds whatever torch sets, and codes are the same
    for every count, and so are products of up to 16 rows."""
    torch_before = torch.get_num_threads()
    rng = np.random.default_rng(8)
    w = torch.from_numpy(rng.laplace(size=(512, 1024)).astype(np.float32))  # 2^19 weights: parallel loops
    x = torch.from_numpy(rng.standard_normal((40, 1024)).astype(np.float32))
    codebook = nuq.design("msptq", 2)
    try:
        codes, products = {}, {}
        for threads in (1, 2, 3):
            nuq.set_num_threads(threads)
            torch.set_num_threads(1 if threads > 1 else 2)
            assert nuq.get_num_threads() == threads
            q = nuq.quantize(w, codebook, normalise="per-channel")
            codes[threads] = q.codes.copy()
            # Up to 16 rows, each output is one thread's sum in a fixed order; above, OpenBLAS sums
            # panels whose size follows the thread count, in an order of its own.
            products[threads] = (nuq.qgemm(x[:16], q).numpy().copy(), nuq.qgemm(x, q).numpy().copy())
        for threads in (2, 3):
            np.testing.assert_array_equal(codes[threads], codes[1])
            assert products[threads][0].tobytes() == products[1][0].tobytes()
            np.testing.assert_allclose(products[threads][1], products[1][1], rtol=1e-5, atol=1e-4)
        for bad in (-1, 1025):
            with pytest.raises(ValueError, match="thread count"):
                nuq.set_num_threads(bad)
        with pytest.raises(TypeError):
            nuq.set_num_threads("2")
        nuq.set_num_threads(0)
        assert nuq.get_num_threads() >= 1
    finally:
        nuq.set_num_threads(0)
        torch.set_num_threads(torch_before)
