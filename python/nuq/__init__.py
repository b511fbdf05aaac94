"""nuq from Python: the quantizers of the SPTQ/MSPTQ papers over numpy arrays and PyTorch tensors.

A thin layer over the C++ library (the `_nuq` extension): codebooks come from ``design``, tensors
are quantized by ``quantize`` (or a whole state dict by ``quantize_state_dict``) into packed codes,
used by ``qgemm`` and ``QuantizedTensor.dequantize``, and kept in the files ``nuq`` itself reads
and writes (``load``, ``save``).

Inputs are read in place when they are C-contiguous (numpy arrays, CPU tensors): float32 as it
lies, float16 and bfloat16 read as they lie by the CPU (each weight widened exactly in a register;
a backend that takes float32 only gets a bounded piece widened at a time), never as a whole copy.
PyTorch CUDA tensors stay on their device when nuq has its CUDA backend (device "auto" or "cuda"):
``quantize`` reads the weights in device memory (float16/bfloat16 widened there a bounded piece at
a time) and brings back only the packed codes and statistics; ``qgemm`` of a CUDA x keeps the codes on that
device and returns a CUDA tensor, on the caller's current stream. With device="cpu" they are
copied to the host. Errors a caller can cause are ValueError with nuq's message.

``nuq.nn`` (imported on its own, as it needs PyTorch) swaps a model's Linear and Conv2d layers for
layers that multiply by the packed codes.
"""

from __future__ import annotations

import numpy as np

from . import _nuq
from ._arrays import _as_numpy, _is_torch, _like, _shape, _torch
from ._bit_rate import bit_rate_of
from ._files import load, load_metadata, save, to_float32
from ._nuq import (Codebook, QuantizedTensor, bit_rate, design, devices, get_num_threads, mismatch, paper,
                   set_num_threads, support_xmax, sweep, worst_sqnr)
from ._quantize import _device_path, quantize
from ._state_dicts import dequantize_state_dict, quantize_state_dict

# Defined in private modules, they are nuq's: help(), reprs and pickles name them as nuq.<function>.
for _public in (quantize, quantize_state_dict, dequantize_state_dict, load, load_metadata, save, to_float32,
                bit_rate_of):
    _public.__module__ = __name__
del _public


# What pickles of a Codebook or QuantizedTensor call to restore them (their __reduce__ names these:
# the classes cannot be made empty and filled afterwards, and pybind11's functions do not pickle).
def _restore_codebook(state):
    return _nuq._codebook_from_state(state)


def _restore_quantized(state):
    return _nuq._quantized_from_state(state)


def _set_quantized_attributes(self, attributes):
    """Pickle's second part of a QuantizedTensor: its instance attributes (the caller's own, and
    ``_device``, the torch device ``dequantize`` returns to), checked before they are set."""
    if not isinstance(attributes, dict):
        raise TypeError(f"QuantizedTensor: pickled attributes of type {type(attributes).__name__}, not a dict")
    device = attributes.get("_device")
    torch = _torch()
    if device is not None and not (torch is not None and isinstance(device, torch.device)):
        raise TypeError(f"QuantizedTensor: a pickled _device of type {type(device).__name__}, "
                        "not a torch.device or None")
    if device is not None and device.type == "cuda" and not _cuda_device_here(torch, device):
        # Quantized on a GPU, unpickled where that GPU is not (torch.load(..., map_location="cpu") on a
        # machine without CUDA or with fewer devices): its values come back on the CPU, as the model's
        # tensors do, instead of failing in every dequantize (and backward pass) afterwards.
        attributes = dict(attributes, _device=torch.device("cpu"))
    self.__dict__.update(attributes)


def _cuda_device_here(torch, device) -> bool:
    return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()


QuantizedTensor.__setstate__ = _set_quantized_attributes


def _refuse_torch_functions(cls, func, types, args=(), kwargs=None):
    """PyTorch's hook for objects its functions are given: a QuantizedTensor is packed codes, not a
    tensor. Having the hook also tells PyTorch's fused paths (TransformerEncoderLayer's fast path
    in inference reads its Linear layers' weights itself) to take the modules' own forward passes,
    which nuq.nn's layers replace."""
    name = getattr(func, "__name__", str(func))
    raise TypeError(f"{name}: a nuq.QuantizedTensor holds packed codes, not a tensor: multiply with nuq.qgemm (the "
                    "layers of nuq.nn do), or take q.dequantize() first")


QuantizedTensor.__torch_function__ = classmethod(_refuse_torch_functions)


def _refuse_array(self, dtype=None, copy=None):
    """numpy's hook: without it np.asarray(q) gives a 0-d array holding the object, which numpy's
    functions then take for a scalar."""
    raise TypeError("a nuq.QuantizedTensor holds packed codes, not an array: take q.dequantize() for its values "
                    "(q.unpacked_codes() for its codes)")


QuantizedTensor.__array__ = _refuse_array


def _size(self, dim=None):
    """The shape, as a torch.Size (what PyTorch asks of anything with __torch_function__ when it
    reports that it could not copy it: load_state_dict of codes into a float parameter)."""
    torch = _torch()
    shape = tuple(self.shape)
    if dim is not None:
        return shape[dim]
    return torch.Size(shape) if torch is not None else shape


def _numel(self) -> int:
    """The number of weights (as a tensor of that shape holds), not of stored bytes (``nbytes``)."""
    return int(np.prod(self.shape, dtype=np.int64))


def _torch_device(self):
    """The torch device ``dequantize`` puts the values on: that of the tensor quantized (a CUDA
    tensor's, where it exists), the CPU for a numpy array or a file's codes; None where PyTorch is not
    imported."""
    device = getattr(self, "_device", None)
    torch = _torch()
    return device if device is not None or torch is None else torch.device("cpu")


class _PackedCodesError(AttributeError, TypeError):
    """A tensor's attribute asked of a QuantizedTensor: a TypeError as torch's functions give (what
    nuq says of wrong types), and an AttributeError, so that hasattr() and getattr(q, name, default)
    still answer."""


def _tensor_attribute(self, name: str):
    """Python's last resort for an attribute the class does not have: one of torch.Tensor's (a parent
    layer reading its Linear's weight.T, .to(), .float()) is told what the codes are and what to use."""
    torch = _torch()
    if not name.startswith("_") and torch is not None and hasattr(torch.Tensor, name):
        error = _PackedCodesError(f"QuantizedTensor.{name}: a nuq.QuantizedTensor holds packed codes, not a tensor: "
                                  f"take q.dequantize() for a tensor of its values (q.dequantize().{name}), or "
                                  "multiply with nuq.qgemm (the layers of nuq.nn do)")
    else:
        error = AttributeError(f"'{type(self).__module__}.{type(self).__qualname__}' object has no attribute {name!r}")
    # (set, not passed: AttributeError takes name= and obj= from Python 3.10 on, and nuq runs on 3.8)
    error.name, error.obj = name, self
    raise error


# Read by code written for tensors (a parent layer reading its Linear's weight): the shape's answers,
# and the device; dtype stays nuq's name of the dtype quantized ("F32"), as dequantize("source") reads it.
QuantizedTensor.size = _size
QuantizedTensor.numel = _numel
QuantizedTensor.dim = lambda self: len(self.shape)
QuantizedTensor.ndim = property(lambda self: len(self.shape), doc="The number of dimensions of the shape.")
QuantizedTensor.device = property(_torch_device, doc=_torch_device.__doc__)
QuantizedTensor.requires_grad = False  # packed codes have no gradient (asked of tensor-like objects)
QuantizedTensor.__getattr__ = _tensor_attribute


__version__ = _nuq.__version__  # the library's, as `nuq --version` gives it

__all__ = [
    "Codebook", "QuantizedTensor", "design", "sweep", "support_xmax", "paper", "devices", "mismatch", "bit_rate",
    "bit_rate_of", "worst_sqnr", "quantize", "set_num_threads", "get_num_threads",
    "quantize_state_dict", "dequantize_state_dict", "qgemm", "load", "load_metadata", "save", "to_float32",
]


def __getattr__(name: str):
    """nuq.nn on first use (it imports PyTorch, which the rest of nuq never needs)."""
    if name == "nn":
        import importlib
        return importlib.import_module(".nn", __name__)
    raise AttributeError(f"module 'nuq' has no attribute {name!r}")


_RESTORED_AS = {"float32": "F32", "f32": "F32", "bfloat16": "BF16", "bf16": "BF16", "float16": "F16",
                "f16": "F16", "half": "F16", "F32": "F32", "BF16": "BF16", "F16": "F16"}  # (and self.dtype's names)


def _restored_dtype(dtype, source: str) -> str:
    """The safetensors name of the dtype ``dequantize`` was asked for: a name ("bfloat16", "bf16"),
    a numpy or torch dtype, safetensors' name ("BF16", as ``self.dtype`` gives it), or "source" (the one
    the tensor was quantized from)."""
    if isinstance(dtype, str) and dtype == "source":
        return source
    name = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    if name not in _RESTORED_AS:
        try:
            name = np.dtype(dtype).name  # np.float16 and numpy's spellings: "<f2", "e", "f4"
        except TypeError:
            pass  # a torch dtype (str() above) or something else (refused below)
    if name not in _RESTORED_AS:
        raise ValueError(f"dequantize: dtype {dtype!r}; nuq restores float32, bfloat16, float16 or 'source' (the "
                         f"tensor's own, here {source})")
    return _RESTORED_AS[name]


def _dequantize(self, dtype="float32"):
    """The quantized values in the original shape, as the array type quantize was given.

    dtype: "float32" (the default), "bfloat16" or "float16" (each value the nearest, ties to even,
    as ``nuq dequantize --dtype`` writes it; a value beyond the dtype's range is a ValueError, never
    an infinity), or "source": the dtype the tensor was quantized from (``self.dtype``). numpy has
    no bfloat16: a numpy result is float32 holding the bfloat16 values, tagged as ``load`` tags a
    widened bfloat16 array, so that ``save`` writes it as bfloat16."""
    as_ = _restored_dtype(dtype, self.dtype)
    values = self._dequantize_numpy(as_)
    device = getattr(self, "_device", None)
    if as_ == "F16":
        values = values.view(np.float16)
    elif as_ == "BF16":
        if device is not None:
            torch = _torch()
            t = torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
            return t if device.type == "cpu" else t.to(device)
        widened = values.astype(np.uint32)
        widened <<= 16  # in place: exact float32s, no second temporary
        return widened.view(np.dtype(np.float32, metadata={"widened_from": "BF16"}))
    return _like(values, device)


QuantizedTensor.dequantize = _dequantize


def qgemm(x, q: QuantizedTensor, bias=None, *, device: str = "auto"):
    """y = x @ W.T (+ bias) straight from the packed codes of W = q ([rows, cols] view).

    x: [..., cols] numpy array or torch tensor (converted to float32); returns [..., rows] of the
    same type, on x's device. device picks the backend: "cpu", "cuda" or "auto". A CUDA x (unless
    "cpu") is multiplied on its device, y a new CUDA tensor, on the current stream; q's codes go to
    that device once and stay. A host x on a GPU ("cuda", or "auto" where one is visible) goes to
    device 0, through the same copy of q's codes: only x and y move after the first product. Grouped tensors are multiplied on the CPU: up to 16 rows of x
    (256 for 1-2-bit codes), each group's normalised levels times its scale, no weight stored;
    above, groups decoded into at most 2 MiB of FP32 per thread at a time. On the CPU, the second of q's products that the table
    look-up takes (1-4-bit codes; up to 256 rows of x at 1-2 bits, 3 at 4) lays the codes out once in
    the order it reads them (as many bytes again as the codes, rows rounded up to 64 bytes and to 16
    rows; kept with q, not pickled), so that it and later ones skip that transpose; of 8-bit codes
    with a table per row (per-channel), up to 16 rows of x, the first product finds each row's grid
    where a uniform design put the levels on one, and every product computes the levels instead of
    gathering them (bench/results/cpu-nn-layers-2026-12-06.md); levels off a grid (mu-law, Lloyd-Max)
    are looked up 64 codes at a time where the CPU has AVX-512 VBMI. The
    product is for inference: y carries no autograd graph, even for an x that requires grad.
    """
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"qgemm: q must be a QuantizedTensor (from nuq.quantize or nuq.load), not {type(q).__name__}")
    if x is None or isinstance(x, (str, bytes, dict)):
        raise TypeError(f"qgemm: x must be a numpy array or torch tensor of the inputs, not {type(x).__name__}")
    if isinstance(bias, (str, bytes, dict)):
        raise TypeError(f"qgemm: bias must be a vector of the outputs' biases, not {type(bias).__name__}")
    for what, value in (("x", x), ("bias", bias)):
        if value is not None and (value.is_complex() if _is_torch(value) else np.iscomplexobj(value)):
            raise TypeError(f"qgemm: {what} is complex; the product is over real numbers")
    if len(_shape(x)) == 0:
        raise ValueError("qgemm: x must have at least one dimension, its last the weights' input columns")
    if bias is not None and len(_shape(bias)) != 1:
        outputs = q.shape[0] if len(q.shape) >= 2 else 1  # the rows of its [shape[0], rest] view
        raise ValueError(f"qgemm: bias must be a vector of the weights' {outputs} output values, not of shape "
                         f"{tuple(_shape(bias))}")
    if not q.group_size and _device_path([x], device):
        torch = _torch()
        xs = x.detach().float().contiguous()
        b = None if bias is None else torch.as_tensor(bias, dtype=torch.float32, device=x.device).contiguous()
        if b is not None and b.numel() != q.rows:
            raise ValueError(f"qgemm: bias must hold the weights' {q.rows} output values, not {b.numel()}")
        y = torch.empty(tuple(xs.shape[:-1]) + (q.rows,), device=x.device, dtype=torch.float32)
        m = xs.numel() // xs.shape[-1] if xs.dim() and xs.shape[-1] else 0
        with torch.cuda.device(x.device):
            _nuq._qgemm_device(xs.data_ptr(), m, xs.shape[-1] if xs.dim() else 0, q,
                               0 if b is None else b.data_ptr(), y.data_ptr(), x.device.index or 0,
                               torch.cuda.current_stream(x.device).cuda_stream)
        return y
    x_array, _, x_device = _as_numpy(x.float() if _is_torch(x) else np.asarray(x, dtype=np.float32), "x")
    b = None
    if bias is not None:
        b, _, _ = _as_numpy(bias.float() if _is_torch(bias) else np.asarray(bias, dtype=np.float32), "bias")
        if b.size != q.rows:
            raise ValueError(f"qgemm: bias must hold the weights' {q.rows} output values, not {b.size}")
    return _like(_nuq._qgemm(x_array, q, b, device), x_device)
