"""PyTorch CUDA tensors where they lie (#20): quantize reads the weights in device memory and brings
back only codes and statistics; qgemm of a CUDA x runs on its device and returns a CUDA tensor.
Skipped unless torch sees a GPU and this build of nuq has its CUDA backend (scripts/gpu-check
runs them on the GPU machine with the bundle's module)."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nuq  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not any(name.startswith("cuda") for name in nuq.devices()),
    reason="needs a GPU visible to torch and nuq's CUDA backend")

# Codes computed from statistics reduced on the device in another order than the CPU's: a weight
# within a rounding of a threshold may take the neighbouring code (as in the C++ gpu tests).
TIES = 1e-4


def laplace(rows, cols, seed=5):
    return torch.from_numpy(np.random.default_rng(seed).laplace(size=(rows, cols)).astype(np.float32))


def differing_code_bytes(a, b):
    return np.count_nonzero(a.codes != b.codes) / a.codes.size


@pytest.mark.parametrize("normalise,group_size", [("global", None), ("per-tensor", None), ("per-channel", None),
                                                  (None, 128)])
def test_a_cuda_tensor_is_quantized_where_it_lies(normalise, group_size):
    w = laplace(512, 1024)
    c = nuq.design("msptq")
    on_device = nuq.quantize(w.cuda(), c, normalise=normalise, group_size=group_size)
    on_host = nuq.quantize(w, c, normalise=normalise, group_size=group_size, device="cpu")
    assert differing_code_bytes(on_device, on_host) <= TIES
    np.testing.assert_allclose(on_device.levels, on_host.levels, rtol=1e-6, atol=1e-7)
    assert on_device.stats["count"] == on_host.stats["count"] == w.numel()
    assert on_device.stats["std"] == pytest.approx(on_host.stats["std"], rel=1e-9)
    assert on_device.sqnr_ex_db == pytest.approx(on_host.sqnr_ex_db, abs=1e-3)
    back = on_device.dequantize()
    assert back.device.type == "cuda" and back.shape == w.shape


@pytest.mark.parametrize("shape,normalise,group_size", [((2048, 4096), "per-channel", None),
                                                       ((2048, 4096), None, 128),
                                                       ((2, 1 << 21), "per-channel", None)])
def test_a_bfloat16_model_sized_tensor_matches_the_cpu(shape, normalise, group_size):
    # Many of the library's pieces (and, for the two long rows, rows split across pieces), each
    # widened on the device a bounded part at a time.
    w = laplace(*shape, seed=6).bfloat16()
    c = nuq.design("msptq")
    on_device = nuq.quantize(w.cuda(), c, normalise=normalise, group_size=group_size)
    on_host = nuq.quantize(w, c, normalise=normalise, group_size=group_size, device="cpu")
    assert on_device.dtype == on_host.dtype == "BF16"
    assert differing_code_bytes(on_device, on_host) <= TIES
    np.testing.assert_allclose(on_device.levels, on_host.levels, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype,name", [(torch.float16, "F16"), (torch.bfloat16, "BF16")])
def test_sixteen_bit_cuda_tensors_keep_their_dtype_name(dtype, name):
    w = laplace(64, 256).to(dtype)
    q = nuq.quantize(w.cuda(), nuq.design("msptq"))
    assert q.dtype == name
    reference = nuq.quantize(w.float().cuda(), nuq.design("msptq"))
    np.testing.assert_array_equal(q.codes, reference.codes)


def test_a_state_dict_on_the_device_round_trips():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).cuda()
    q = nuq.quantize_state_dict(model.state_dict(), nuq.design("msptq"), skip="*.bias", normalise="per-channel")
    assert [k for k, v in q.items() if isinstance(v, nuq.QuantizedTensor)] == ["0.weight", "2.weight"]
    host = nuq.quantize_state_dict({k: v.cpu() for k, v in model.state_dict().items()}, nuq.design("msptq"),
                                   skip="*.bias", normalise="per-channel", device="cpu")
    for k in ("0.weight", "2.weight"):
        assert differing_code_bytes(q[k], host[k]) <= TIES
    model.load_state_dict(nuq.dequantize_state_dict(q))
    assert model[0].weight.device.type == "cuda"


def test_qgemm_of_a_cuda_x_runs_on_its_device():
    q = nuq.quantize(laplace(300, 512).cuda(), nuq.design("msptq"))
    x = torch.randn(2, 3, 512, device="cuda")
    bias = torch.randn(300, device="cuda")
    y = nuq.qgemm(x, q, bias)
    assert y.device == x.device and y.shape == (2, 3, 300) and y.dtype == torch.float32
    reference = x.double() @ q.dequantize().double().T + bias.double()
    torch.testing.assert_close(y.double(), reference, rtol=1e-4, atol=1e-3)
    again = nuq.qgemm(x, q, bias)  # the codes already on the device
    torch.testing.assert_close(again, y, rtol=0, atol=0)
    host = nuq.qgemm(x.cpu(), q, bias.cpu(), device="cpu")
    torch.testing.assert_close(y.cpu(), host, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="bias"):
        nuq.qgemm(x, q, torch.ones(7, device="cuda"))


def test_qgemm_on_a_side_stream_waits_for_its_codes():
    q = nuq.quantize(laplace(256, 1024, seed=7).cuda(), nuq.design("msptq"))  # not yet on the device for products
    x = torch.randn(4, 1024, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = nuq.qgemm(x, q)
    stream.synchronize()
    torch.testing.assert_close(y.double(), x.double() @ q.dequantize().double().T, rtol=1e-4, atol=1e-3)
    assert torch.cuda.current_device() == x.device.index


def test_nn_layers_of_a_model_on_the_device_run_there():
    import nuq.nn

    def cnn():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                   torch.nn.Linear(16 * 8 * 8, 64))
    torch.manual_seed(3)
    model = cnn().cuda()
    nuq.nn.quantize_modules(model, nuq.design("msptq"), normalise="per-channel")  # read on the device
    on_host = cnn()
    nuq.nn.load_quantized(on_host, model.state_dict(), device="cpu")  # the same codes, multiplied on the CPU
    x = torch.randn(4, 3, 8, 8, device="cuda", requires_grad=True)
    y = model(x)
    assert y.device == x.device and y.dtype == torch.float32
    torch.testing.assert_close(y.detach().cpu(), on_host(x.detach().cpu()), rtol=1e-4, atol=1e-4)
    y.square().sum().backward()
    assert x.grad.device == x.device and model[3].bias.grad.device == x.device
    assert model(x.detach().half()).dtype == torch.float16


def test_a_nonfinite_weight_on_the_device_is_named():
    w = laplace(16, 64)
    w[3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"element \[3, 5\] is nan"):
        nuq.quantize(w.cuda(), nuq.design("msptq"))
    q = nuq.quantize(w.cuda(), nuq.design("msptq"), nonfinite="saturate")
    assert q.stats["nonfinite"] == 1


SCRIPT = """
import torch, nuq
def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
c = nuq.design("msptq")
nuq.quantize(torch.randn(64, 256, device="cuda"), c)  # the CUDA contexts and kernels loaded
w = torch.randn(1 << 14, 1 << 14, device="cuda")  # 2^28 weights, 1 GiB
torch.cuda.synchronize()
before = peak()
q = nuq.quantize(w, c)
print(peak() - before, w.numel() * 4, q.codes.nbytes)
"""


def test_a_gigabyte_on_the_device_is_not_copied_to_the_host():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stdout + result.stderr
    growth, tensor_bytes, code_bytes = map(int, result.stdout.split())
    print(f"host peak grew by {growth / 2**20:.0f} MiB while quantizing {tensor_bytes / 2**20:.0f} MiB on the device")
    assert growth <= code_bytes + (64 << 20), f"host peak grew by {growth / 2**20:.0f} MiB"
