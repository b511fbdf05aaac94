"""quantize: one tensor with a codebook, on the CPU or where a CUDA tensor lies; the options
checked in Python's terms before the library sees them."""

from __future__ import annotations

import functools
import numbers
import warnings

import numpy as np

from . import _nuq
from ._arrays import (_as_stored, _check_names, _is_float64, _is_torch, _on_cuda, _require_utf8, _rounded_to_float32,
                      _torch)
from ._nuq import Codebook, QuantizedTensor, devices

def _check_options(caller: str, codebook, normalise, group_size, nonfinite, device) -> None:
    """The options' types, said in Python's terms before the library sees them, and a codebook
    designed for another sigma than the normalised weights' warned of."""
    if not isinstance(codebook, Codebook):
        raise TypeError(f"{caller}: codebook must be a nuq.Codebook (from nuq.design or Codebook.from_json), "
                        f"not {type(codebook).__name__}")
    for option, value in (("normalise", normalise), ("nonfinite", nonfinite), ("device", device)):
        if not isinstance(value, str) and (value is not None or option != "normalise"):
            raise TypeError(f"{caller}: {option} must be a string, not {type(value).__name__}")
        if value is not None:
            _require_utf8(value, f"{caller}: {option}={value!r}")
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
            raise TypeError(f"{caller}: group_size must be an int, not {type(group_size).__name__}")
        if not 0 < group_size < 2**62:
            raise ValueError(f"{caller}: group_size={group_size}: a group size must be a positive multiple of 8")
    if normalise != "none" and codebook.sigma != 1.0:
        warnings.warn(f"{caller}: the codebook is designed for sigma={codebook.sigma:g}, but normalise="
                      f"{normalise or ('per-channel' if group_size else 'global')!r} scales the weights to unit "
                      "variance: its levels are that many times too wide or narrow (design with sigma=1, or pass "
                      "normalise='none' for weights of that sigma)", stacklevel=3)


@functools.lru_cache(maxsize=None)  # asked once: making a backend to see whether it can be made costs milliseconds
def _cuda_backend() -> bool:
    """Whether this build of nuq has its CUDA backend and sees a device."""
    return any(name.startswith("cuda") for name in devices())


def _device_path(tensors, device: str) -> bool:
    """Whether `tensors` go through device memory: some are CUDA tensors, the caller did not ask
    for the CPU, and nuq can use the GPU ("cuda" without it raises, as for host inputs)."""
    if not isinstance(device, str):  # (as _check_options says it of quantize's)
        raise TypeError(f"device must be a string (cpu, cuda or auto), not {type(device).__name__}")
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"unknown device '{device}' (cpu, cuda or auto)")
    if device == "cpu" or not any(_on_cuda(t) for t in tensors):
        return False
    if device == "cuda" and not _cuda_backend():
        raise ValueError("device='cuda': " + (", ".join(devices()) + ": no CUDA backend in this build or no device"))
    return _cuda_backend()


_DTYPE_NAMES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16"}


def _quantize_on_device(named, codebook, normalise, group_size, nonfinite):
    """QuantizedTensors of (name, tensor) pairs read in the memory of the first CUDA tensor's device
    (the others are copied there, contiguous; float16 and bfloat16 are widened there a bounded
    piece at a time by the library, so a 16-bit model is never held twice). Each result
    dequantizes to the device (or array type) its input had."""
    torch = _torch()
    where = next(t.device for _, t in named if _on_cuda(t))
    kept = []  # alive until the library has read them
    for name, t in named:
        origin = t.device if _is_torch(t) else None
        if _is_torch(t):
            t = t.detach()
        else:
            array, tag, _ = _as_stored(t, name, stacklevel=4)
            t = torch.from_numpy(array)
            if tag == "BF16":  # load's bfloat16, its values still bfloat16's: exactly bfloat16 again
                t = t.to(torch.bfloat16)
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            t = t.float()
        kept.append((name, t.to(where).contiguous(), origin))
    with torch.cuda.device(where):  # the library's device calls leave the caller's current device as it was
        torch.cuda.current_stream(where).synchronize()  # whatever wrote the weights has finished
        quantized = _nuq._quantize_device(
            [(name, t.data_ptr(), list(t.shape), _DTYPE_NAMES[str(t.dtype)]) for name, t, _ in kept],
            codebook, normalise, group_size, where.index or 0, nonfinite)
    for (_, _, origin), q in zip(kept, quantized):
        q._device = origin
    return quantized


def _one_tensor(w, caller: str, name: str, expected: str, empty: str):
    """w as nuq reads one tensor: a numpy array or torch tensor as it is, another array-like as numpy's
    view of it, float64 rounded to a float32 copy; another type is a TypeError (`expected`: the
    argument and what it must be), an empty tensor a ValueError (`empty`: why it cannot be taken)."""
    if not (isinstance(w, np.ndarray) or _is_torch(w) or hasattr(w, "__array__") or hasattr(w, "__array_interface__")):
        raise TypeError(f"{caller}: {expected}, not {type(w).__name__}")
    if not (isinstance(w, np.ndarray) or _is_torch(w)):
        w = np.asarray(w)  # another array-like (its __array__ or __array_interface__): numpy's view of it
    if 0 in tuple(w.shape):
        raise ValueError(f"{caller}: tensor '{name}' is empty (shape {tuple(w.shape)}): {empty}")
    if _is_float64(w):  # numpy's default dtype (rng.laplace gives it): taken as its float32 rounding
        w = _rounded_to_float32(w, name)
    return w


def quantize(w, codebook: Codebook, *, normalise: str | None = None, group_size: int | None = None,
             device: str = "auto", nonfinite: str = "error", name: str = "tensor") -> QuantizedTensor:
    """Quantize one tensor with `codebook` (designed for the normalised weights, e.g. ``design("msptq")``).

    w: numpy array or PyTorch tensor, float32/float16/bfloat16 (read in place) or float64 (rounded
    to a float32 copy first: nuq computes in float32, and the result's dtype is F32), any non-empty
    shape (quantized as its [shape[0], rest] view). normalise: "global" (the default without groups; Algorithm 1: for one
    tensor, its own mean and standard deviation), "per-tensor", "per-channel" (each output row its
    own) or "none". group_size: G, a multiple of 8 dividing the rows' length, gives each run of G
    weights along a row its own scale (the RMS of its weights about the tensor's mean; codebooks
    of up to 8 bits; implies normalise="per-channel", as ``nuq quantize --group-size G``); the
    result's ``scales`` holds them. device: "cpu", "cuda" or "auto" (a CUDA tensor is read where it
    lies unless "cpu"). nonfinite: "error" (NaN/Inf raise ValueError) or "saturate". name: what errors
    and warnings call the tensor. The result's codes (and scales) are those ``nuq quantize`` writes for the same weights.
    """
    _check_options("quantize", codebook, normalise, group_size, nonfinite, device)
    _check_names([name], "quantize")
    w = _one_tensor(w, "quantize", name, "w must be a numpy array or a PyTorch tensor",
                    "there is nothing to quantize (quantize_state_dict keeps empty tensors as they are)")
    if _device_path([w], device):
        (q,) = _quantize_on_device([(name, w)], codebook, normalise, group_size, nonfinite)
        return q
    array, tag, torch_device = _as_stored(w, name)
    (q,) = _nuq._quantize([(name, array, tag)], codebook, normalise, group_size, device, nonfinite)
    q._device = torch_device
    return q
