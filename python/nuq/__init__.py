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
"""

from __future__ import annotations

import fnmatch
import functools
import numbers
import os
import re
import warnings

import numpy as np

from . import _nuq
from ._nuq import Codebook, QuantizedTensor, bit_rate, design, devices, mismatch, paper, support_xmax, sweep, worst_sqnr


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
    self.__dict__.update(attributes)


QuantizedTensor.__setstate__ = _set_quantized_attributes

__all__ = [
    "Codebook", "QuantizedTensor", "design", "sweep", "support_xmax", "paper", "devices", "mismatch", "bit_rate",
    "worst_sqnr", "quantize",
    "quantize_state_dict", "dequantize_state_dict", "qgemm", "load", "load_metadata", "save", "to_float32",
]


def _torch():
    """PyTorch when it is installed and already imported by the caller (nuq never needs it)."""
    import sys
    return sys.modules.get("torch")


def _is_torch(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _as_numpy(x, name: str):
    """(array, dtype tag, torch device or None): a view of `x`'s memory where one is possible."""
    if _is_torch(x):
        torch = _torch()
        device = x.device
        if device.type == "meta":
            raise ValueError(f"tensor '{name}' is on PyTorch's meta device: it has a shape but no values (load or "
                             "materialise its weights first)")
        if x.layout != torch.strided:
            raise TypeError(f"tensor '{name}' has PyTorch's {x.layout} layout; nuq reads dense tensors "
                            "(x.to_dense() first)")
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()  # documented: device tensors are copied to the host
        t = t.resolve_conj().resolve_neg().contiguous()  # lazy conjugate or negation bits: the values as they read
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: its bits go as uint16, tagged
            return t.view(torch.int16).numpy().view(np.uint16), "BF16", device
        return t.numpy(), None, device
    a = np.asarray(x)
    if not (a.flags.c_contiguous and a.flags.aligned) or not a.dtype.isnative:
        native = a.dtype if a.dtype.isnative else np.dtype(a.dtype.name)  # name: the native, canonical dtype
        a = np.require(a, dtype=native, requirements=["C", "A"])  # strided, unaligned or byte-swapped: one copy
    return a, _stored_dtype(a), None


def _as_stored(x, name: str, stacklevel: int = 3):
    """`_as_numpy` for what is written or quantized: a float32 array ``load`` widened from bfloat16
    is tagged BF16 while every value still is a bfloat16 (the library reads it in place and records
    or writes bfloat16, so that a file keeps the dtype it had); one whose values bfloat16 no longer
    holds goes as float32, with a warning."""
    a, tag, device = _as_numpy(x, name)
    if tag is not None or a.dtype != np.float32 or (a.dtype.metadata or {}).get("widened_from") != "BF16":
        return a, tag, device
    if a.reshape(-1).view(np.uint16)[0::2].any():  # C-contiguous, little-endian: the low halves, in place
        warnings.warn(f"tensor '{name}': nuq.load widened it from bfloat16, but it now holds values bfloat16 cannot "
                      "represent: it goes as float32", stacklevel=stacklevel)
        return a, tag, device
    return a, "BF16", device


def _stored_dtype(a):
    """The safetensors dtype ``load`` tagged a byte array with (8-bit and packed floats), or None."""
    return (a.dtype.metadata or {}).get("safetensors") if isinstance(a, np.ndarray) else None


def _path(path) -> bytes:
    """A file name from str, bytes or os.PathLike, as the bytes the file system takes (so that a name
    that is not UTF-8 reaches the library as it is)."""
    try:
        name = os.fsencode(os.fspath(path))
    except TypeError:
        raise TypeError(f"a path must be str, bytes or os.PathLike, not {type(path).__name__}") from None
    if b"\0" in name:  # the C library would end the name there: another file than the one named
        raise ValueError(f"{os.fsdecode(name)!r}: a path cannot hold a NUL byte")
    return name


def _check_names(names, what: str) -> None:
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what}: the name {name!r} is not a string (tensors are named by strings)")


def _check_options(caller: str, codebook, normalise, group_size, nonfinite, device) -> None:
    """The options' types, said in Python's terms before the library sees them, and a codebook
    designed for another sigma than the normalised weights' warned of."""
    if not isinstance(codebook, Codebook):
        raise TypeError(f"{caller}: codebook must be a nuq.Codebook (from nuq.design or Codebook.from_json), "
                        f"not {type(codebook).__name__}")
    for option, value in (("normalise", normalise), ("nonfinite", nonfinite), ("device", device)):
        if not isinstance(value, str) and (value is not None or option != "normalise"):
            raise TypeError(f"{caller}: {option} must be a string, not {type(value).__name__}")
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


def _on_cuda(x) -> bool:
    return _is_torch(x) and x.device.type == "cuda"


@functools.lru_cache(maxsize=None)  # asked once: making a backend to see whether it can be made costs milliseconds
def _cuda_backend() -> bool:
    """Whether this build of nuq has its CUDA backend and sees a device."""
    return any(name.startswith("cuda") for name in devices())


def _device_path(tensors, device: str) -> bool:
    """Whether `tensors` go through device memory: some are CUDA tensors, the caller did not ask
    for the CPU, and nuq can use the GPU ("cuda" without it raises, as for host inputs)."""
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


def _like(array: np.ndarray, device):
    """`array` as the caller's type: a torch tensor on `device` when the input was one."""
    if device is None:
        return array
    torch = _torch()
    t = torch.from_numpy(array)
    return t if device.type == "cpu" else t.to(device)


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
    lies unless "cpu"). nonfinite: "error" (NaN/Inf raise ValueError) or "saturate". The result's
    codes (and scales) are those ``nuq quantize`` writes for the same weights.
    """
    _check_options("quantize", codebook, normalise, group_size, nonfinite, device)
    _check_names([name], "quantize")
    if not (isinstance(w, np.ndarray) or _is_torch(w) or hasattr(w, "__array__") or hasattr(w, "__array_interface__")):
        raise TypeError(f"quantize: w must be a numpy array or a PyTorch tensor, not {type(w).__name__}")
    if not (isinstance(w, np.ndarray) or _is_torch(w)):
        w = np.asarray(w)  # another array-like (its __array__ or __array_interface__): numpy's view of it
    if 0 in tuple(w.shape):
        raise ValueError(f"quantize: tensor '{name}' is empty (shape {tuple(w.shape)}): there is nothing to quantize "
                         "(quantize_state_dict keeps empty tensors as they are)")
    if _is_float64(w):  # numpy's default dtype (rng.laplace gives it): quantized as its float32 rounding
        w = _rounded_to_float32(w, name)
    if _device_path([w], device):
        (q,) = _quantize_on_device([(name, w)], codebook, normalise, group_size, nonfinite)
        return q
    array, tag, torch_device = _as_stored(w, name)
    (q,) = _nuq._quantize([(name, array, tag)], codebook, normalise, group_size, device, nonfinite)
    q._device = torch_device
    return q


def _skip_patterns(skip):
    """skip as a list of globs and compiled regular expressions (a generator is read once)."""
    if skip is None or callable(skip):
        return skip
    if isinstance(skip, (bytes, bytearray)):
        raise ValueError("skip: a glob string or a compiled regular expression, not bytes")
    if isinstance(skip, (str, re.Pattern)):
        return [skip]
    try:
        patterns = list(skip)
    except TypeError:
        raise ValueError(f"skip: {skip!r}; give None, a callable skip(name, tensor), a glob string, a compiled "
                         "regular expression, or a list of globs and expressions") from None
    for pattern in patterns:
        if not isinstance(pattern, (str, re.Pattern)):
            raise ValueError(f"skip: {pattern!r} is neither a glob string nor a compiled regular expression")
    return patterns


def _matches(pattern, name: str) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.search(name) is not None  # as `nuq quantize --skip`: searched, not anchored
    return fnmatch.fnmatchcase(name, pattern)


def _module(name: str) -> str:
    return name.rpartition(".")[0]


def _kept_by_default(state_dict, quantize_vectors: bool):
    """The floating tensors ``nuq quantize`` keeps in a checkpoint: empty ones, vectors and scalars
    (norms, biases) unless quantize_vectors, and those of a module that holds a tensor of another dtype (a
    module another tool quantized: an FP8 weight's scale, GPTQ's scales beside its int32 qweight)."""
    marks = [k for k, v in state_dict.items() if _marks_a_quantized_module(k, v)]
    # Its module, and itself as one (bitsandbytes keeps `<m>.weight.absmax` beside the U8 `<m>.weight`)
    elsewhere = {m for k in marks for m in (_module(k), k) if m}
    vector = lambda v: not quantize_vectors and len(_shape(v)) < 2
    return {k for k, v in state_dict.items()
            if _floating(v) and (vector(v) or 0 in _shape(v) or _module(k) in elsewhere)}


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _floating(x) -> bool:
    """float32, float16 or bfloat16: what a state dict has quantized (not float64, kept as nuq quantize
    keeps F64 tensors; not 8-bit floats)."""
    if _is_torch(x):
        torch = _torch()
        return x.dtype in (torch.float32, torch.float16, torch.bfloat16)
    return np.asarray(x).dtype in (np.float32, np.float16)


def _rounded_to_float32(w, name: str):
    """A float64 array or tensor as float32, refusing a finite weight beyond float32's range (it would
    round to an infinity and be reported, or saturated, as one the caller never had)."""
    if _is_torch(w):
        torch = _torch()
        w = w.detach()
        w32 = w.float()
        overflow = torch.isinf(w32) & torch.isfinite(w)
    else:
        with np.errstate(over="ignore"):
            w32 = w.astype(np.float32)
        overflow = np.isinf(w32) & np.isfinite(w)
    if not bool(overflow.any()):
        return w32
    mask = overflow.cpu().numpy() if _is_torch(overflow) else overflow  # the error's path: found on the host
    index = np.unravel_index(int(np.argmax(mask)), mask.shape)
    value = float(w[index])
    place = ", ".join(str(int(i)) for i in index)
    raise ValueError(f"quantize: tensor '{name}' element [{place}] is {value:g}, beyond float32's range (3.4e+38), "
                     "in which nuq quantizes; scale the tensor down first")


def _is_float64(x) -> bool:
    if _is_torch(x):
        return x.dtype == _torch().float64
    return isinstance(x, np.ndarray) and x.dtype == np.float64


def _marks_a_quantized_module(name: str, v) -> bool:
    """A tensor of another dtype that says its module was quantized by another tool: packed codes
    or 8-bit weights (I32, U8, I8, FP8, F4, ...), never an index or counter buffer (I64, U64, bool:
    BatchNorm's num_batches_tracked, position_ids) or a one-element tensor."""
    if not hasattr(v, "dtype") or isinstance(v, QuantizedTensor) or _floating(v):
        return False
    if int(np.prod(_shape(v), dtype=np.int64)) <= 1:
        return False
    dtype = str(v.dtype).replace("torch.", "")
    return dtype not in ("int64", "uint64", "bool", "float64")


def quantize_state_dict(state_dict, codebook: Codebook, *, skip=None, normalise: str | None = None,
                        group_size: int | None = None, device: str = "auto", nonfinite: str = "error",
                        quantize_vectors: bool = False) -> dict:
    """Quantize the float32/float16/bfloat16 matrices of a state dict with one codebook, as
    ``nuq quantize`` does a checkpoint (the same tensors kept, the same codes).

    Kept as they are: 1-D tensors and scalars (norms, biases, BatchNorm statistics: a 2-bit norm
    breaks a model) unless quantize_vectors=True (Algorithm 1 of the paper quantizes every
    parameter, biases included: nuq's own models are quantized so); the floating tensors of a
    module that also holds a tensor of another dtype (another tool's quantized module: FP8 weights'
    scales, GPTQ's scales beside its int32 qweight); and what `skip` names: None, a callable
    ``skip(name, tensor) -> bool``, or patterns, each a glob matched against the whole name
    (``"*.bias"``, ``"*norm*"``) or a compiled regular expression searched in it, as ``nuq quantize
    --skip`` does (``re.compile("embed_tokens|lm_head")``); a pattern that names no tensor warns.
    With normalise="global" the mean and standard deviation of all quantized tensors together
    normalise each; group_size as in ``quantize`` (every quantized tensor's rows must split into
    groups). Returns a dict with a QuantizedTensor for each quantized entry and the original object
    for every other. A state dict holding QuantizedTensors, or nothing to quantize, is a ValueError,
    as ``nuq quantize`` refuses such a checkpoint. Ctrl-C stops it after the tensor in hand (KeyboardInterrupt).
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"quantize_state_dict: a dict of name -> tensor, not {type(state_dict).__name__}")
    _check_names(state_dict.keys(), "quantize_state_dict")
    _check_options("quantize_state_dict", codebook, normalise, group_size, nonfinite, device)
    # As `nuq quantize` refuses a quantized file: codes quantized again with another codebook would
    # otherwise come back unchanged, under the old design, with nothing said.
    already = [k for k, v in state_dict.items() if isinstance(v, QuantizedTensor)]
    if already:
        raise ValueError(f"quantize_state_dict: tensor '{already[0]}' is already quantized"
                         f"{f' (and {len(already) - 1} more)' if len(already) > 1 else ''}; dequantize_state_dict() it "
                         "first to quantize the restored weights again")
    patterns = _skip_patterns(skip)
    if patterns is not None and not callable(patterns):
        for pattern in patterns:
            if not any(_matches(pattern, k) for k in state_dict):
                how = ("a regular expression, searched in each name" if isinstance(pattern, re.Pattern) else
                       "a glob, matched against the whole name; pass re.compile(...) for a regular expression")
                shown = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
                warnings.warn(f"quantize_state_dict: skip pattern {shown!r} names no tensor ({how})", stacklevel=2)
    kept = _kept_by_default(state_dict, quantize_vectors)

    def skipped(name, tensor):
        if name in kept or patterns is None:
            return name in kept
        if callable(patterns):
            return bool(patterns(name, tensor))
        return any(_matches(p, name) for p in patterns)

    chosen = [(k, v) for k, v in state_dict.items() if _floating(v) and not skipped(k, v)]
    doubles = [k for k, v in state_dict.items() if _is_float64(v) and len(_shape(v)) >= 2 and not skipped(k, v)]
    if doubles:
        shown = ", ".join(doubles[:5]) + (f" and {len(doubles) - 5} more" if len(doubles) > 5 else "")
        warnings.warn(f"quantize_state_dict: float64 tensors kept as they are: {shown} (a state dict's "
                      "float32, float16 and bfloat16 tensors are quantized, as nuq quantize keeps F64 ones; convert "
                      "them with .float() or .astype(np.float32) first to quantize them)", stacklevel=2)
    if not chosen:  # as `nuq quantize` says of such a checkpoint: asked for codes, there would be none
        raise ValueError("quantize_state_dict: no tensor to quantize (float32, float16 or bfloat16 tensors of two or "
                         "more dimensions, or any with quantize_vectors=True, that skip does not name)")
    if _device_path([v for _, v in chosen], device):
        out = dict(state_dict)
        out.update(zip((k for k, _ in chosen), _quantize_on_device(chosen, codebook, normalise, group_size, nonfinite)))
        return out
    inputs = []
    for k, v in chosen:  # (a loop, not a comprehension: _as_stored's warnings point at the caller)
        inputs.append((k,) + _as_stored(v, k))
    quantized = _nuq._quantize([(k, a, tag) for k, a, tag, _ in inputs], codebook, normalise, group_size, device,
                               nonfinite) if inputs else []
    out = dict(state_dict)
    for (k, _, _, torch_device), q in zip(inputs, quantized):
        q._device = torch_device
        out[k] = q
    return out


_RESTORED_AS = {"float32": "F32", "f32": "F32", "bfloat16": "BF16", "bf16": "BF16", "float16": "F16",
                "f16": "F16", "half": "F16"}


def _restored_dtype(dtype, source: str) -> str:
    """The safetensors name of the dtype ``dequantize`` was asked for: a name ("bfloat16", "bf16"),
    a numpy or torch dtype, or "source" (the one the tensor was quantized from)."""
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
        widened = (values.astype(np.uint32) << 16).view(np.float32)  # exact
        return widened.view(np.dtype(np.float32, metadata={"widened_from": "BF16"}))
    return _like(values, device)


QuantizedTensor.dequantize = _dequantize


def _as_torch_tensor(name: str, value):
    """A value of a loaded state dict as a torch tensor: numpy arrays through ``torch.from_numpy``
    (bfloat16 as widened, exactly; 8-bit floats through ``to_float32``); torch tensors as they are."""
    import torch  # asked for by name: imported here if the caller has not
    if _is_torch(value) or not isinstance(value, np.ndarray):
        return value
    tag = _stored_dtype(value)  # (bfloat16 is widened, not tagged so: it goes through from_numpy below)
    if tag is not None:
        if tag.startswith("F8"):
            return torch.from_numpy(to_float32(value))
        raise ValueError(f"dequantize_state_dict: tensor '{name}' holds {tag} values, which torch has no dtype for")
    try:
        return torch.from_numpy(np.ascontiguousarray(value))
    except TypeError as e:
        raise ValueError(f"dequantize_state_dict: tensor '{name}': {e}") from None


def dequantize_state_dict(state_dict, *, as_torch: bool = False, dtype="float32") -> dict:
    """Every QuantizedTensor of a dict replaced by its dequantized values: torch tensors (on their
    device) for tensors quantized from torch, numpy arrays otherwise (those of ``load``). With
    as_torch=True every value is a torch tensor (numpy arrays through ``torch.from_numpy``, 8-bit
    floats widened exactly), ready for ``model.load_state_dict``. dtype is
    ``QuantizedTensor.dequantize``'s ("source": each tensor's own); other values are left as they are."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"dequantize_state_dict: a dict of name -> tensor, not {type(state_dict).__name__}")
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, QuantizedTensor):
            out[k] = _as_torch_tensor(k, v) if as_torch else v
            continue
        try:
            restored = v.dequantize(dtype)
        except ValueError as e:
            raise ValueError(f"dequantize_state_dict: tensor '{k}': {e}") from None
        if as_torch and isinstance(restored, np.ndarray):
            import torch
            bf16 = (restored.dtype.metadata or {}).get("widened_from") == "BF16"  # asked for: bfloat16 again
            restored = torch.from_numpy(restored).to(torch.bfloat16) if bf16 else torch.from_numpy(restored)
        out[k] = restored
    return out


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
    rows; kept with q, not pickled), so that it and later ones skip that transpose. The
    product is for inference: y carries no autograd graph, even for an x that requires grad.
    """
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"qgemm: q must be a QuantizedTensor (from nuq.quantize or nuq.load), not {type(q).__name__}")
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
    return _like(_nuq._qgemm(x_array, q, b, device), x_device)


def load(path: str) -> dict:
    """Every tensor of a safetensors file nuq wrote (or any safetensors file), read a tensor at a
    time: loading costs what it returns and a few MiB (a quantized tensor's stored bytes, for a
    moment, twice), never the whole file beside it. A folder of shards or its
    ``model.safetensors.index.json`` (as ``nuq quantize`` reads and writes them) gives every shard's
    tensors in one dict; quantized shards must come from one ``nuq quantize`` run, and where the
    index and the shards disagree the shards are followed, each disagreement a UserWarning.

    Quantized tensors (``nuq quantize`` of a checkpoint or a nuq model, ``nuq.save``) come back as
    QuantizedTensor, the others as numpy arrays: bfloat16 widened exactly to float32, its dtype
    tagged (``array.dtype.metadata["widened_from"]``) so that ``save`` writes it as bfloat16 again
    and ``quantize`` records bfloat16 as its dtype (reading it in place), while its values are still
    bfloat16's. Arrays computed from it keep the tag or not as numpy decides (``a * 2`` keeps it,
    ``np.concatenate`` drops it; ``.astype(np.float32)`` drops it for certain, and ``np.save`` warns
    of it); one that keeps it but no longer holds bfloat16s is written as float32, warned of. The 8-bit
    floats (F8_E4M3, F8_E5M2, F8_E8M0 and the FNUZ variants) and the packed 4- and 6-bit floats (F4,
    F6_*) as their bytes (uint8, the last dimension in bytes), their dtype and shape in
    ``array.dtype.metadata``, so that ``save`` writes them back as they were and
    ``quantize_state_dict`` keeps them (and their modules' scales) as ``nuq quantize`` does;
    ``to_float32`` widens the 8-bit ones exactly. ``load_metadata`` gives the file's metadata.
    """
    return _nuq._load(_path(path))


def to_float32(array) -> np.ndarray:
    """The values of 8-bit float bytes ``load`` returned (F8_E4M3, F8_E5M2, F8_E8M0, the FNUZ
    variants), exactly, as float32 of the same shape."""
    tag = _stored_dtype(array)
    if tag is None:
        raise ValueError("to_float32: not the bytes of an 8-bit float tensor from nuq.load")
    return _nuq._float8_to_f32(np.ascontiguousarray(array), tag)


def load_metadata(path: str) -> dict:
    """The file's ``__metadata__`` without nuq's own description of its quantized tensors: what
    ``save(path, tensors, metadata=...)`` takes to write it again (a nuq model's architecture and
    data set, which ``nuq eval`` needs, among it)."""
    return _nuq._load_metadata(_path(path))


def save(path: str, tensors: dict, metadata: dict | None = None) -> None:
    """Write `tensors` (QuantizedTensor, numpy arrays, torch tensors) as safetensors, atomically.

    With QuantizedTensors the file is a quantized checkpoint as ``nuq quantize`` writes it (``nuq
    dequantize`` and ``nuq.load`` read it back); they must share one codebook and normalisation.
    Tensors quantized with "global" normalisation by separate calls each have their own statistics:
    the file records them as "per-tensor" (one call of ``quantize_state_dict`` shares one map).
    Grouped tensors are written in the grouped layout of ``nuq quantize --group-size``. Without
    QuantizedTensors the arrays go to the file as they lie (bfloat16 narrowed a piece at a time),
    none copied whole.
    """
    path = _path(path)
    if not hasattr(tensors, "items"):
        raise TypeError(f"save: a dict of name -> tensor, not {type(tensors).__name__}")
    _check_names(tensors.keys(), "save")
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"save: metadata {key!r}: {value!r}: safetensors metadata maps strings to strings")
    quantized = {k: v for k, v in tensors.items() if isinstance(v, QuantizedTensor)}
    plain = []
    for k, v in tensors.items():
        if not isinstance(v, QuantizedTensor):
            shape = _element_shape(k, v)
            array, tag, _ = _as_stored(v, k)
            plain.append((k, array, tag, shape))
    _nuq._save(path, quantized, plain, metadata)


_PACKED_BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}  # the rest of load's byte-tagged dtypes: 8 bits


def _element_shape(name: str, v):
    """The shape in elements of bytes ``load`` tagged (8-bit and packed floats), checked against the
    bytes' own layout as load gave it; None for any other array."""
    tag = _stored_dtype(v)
    shape = (v.dtype.metadata or {}).get("shape") if tag else None
    if shape is None:
        return None
    shape = [int(d) for d in shape]
    bits = _PACKED_BITS.get(tag, 8)
    count = int(np.prod(shape, dtype=np.int64))
    expected = (tuple(shape[:-1]) + (shape[-1] * bits // 8,) if shape and shape[-1] * bits % 8 == 0
                else (count * bits // 8,))
    if not v.flags.c_contiguous or tuple(v.shape) != expected:
        raise ValueError(f"save: tensor '{name}': {tag} bytes of shape {tuple(v.shape)} (contiguous: "
                         f"{v.flags.c_contiguous}) are not the {tag} {shape} their dtype records; write them as "
                         "nuq.load gave them (a transposed or reshaped view would store its bytes in another order)")
    return shape
