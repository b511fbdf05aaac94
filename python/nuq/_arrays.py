"""What nuq takes in and gives back: numpy arrays and PyTorch tensors as views the library reads
in place (or one copy where it cannot), paths as the bytes the file system takes, and results as
the caller's array type."""

from __future__ import annotations

import os
import warnings

import numpy as np

def _torch():
    """PyTorch when it is installed and already imported by the caller (nuq never needs it)."""
    import sys
    return sys.modules.get("torch")


def _is_torch(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _require_values(x, name: str) -> None:
    """Refuses a torch tensor whose values cannot be read as they lie: on the meta device, sparse, or
    of more dimensions than numpy holds."""
    if x.device.type == "meta":
        raise ValueError(f"tensor '{name}' is on PyTorch's meta device: it has a shape but no values (load or "
                         "materialise its weights first)")
    if x.layout != _torch().strided:
        raise TypeError(f"tensor '{name}' has PyTorch's {x.layout} layout; nuq reads dense tensors "
                        "(x.to_dense() first)")
    if x.dim() > 32:  # (numpy's own error would not name the tensor)
        raise ValueError(f"tensor '{name}' has {x.dim()} dimensions; numpy and safetensors hold at most 32")


def _read_in_place(a: np.ndarray) -> bool:
    """Whether the library reads a numpy array where it lies: C-contiguous, aligned, native order."""
    return a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative


def _native(dtype: np.dtype) -> np.dtype:
    """`dtype` in the machine's byte order (by name, its canonical form, where it is not)."""
    return dtype if dtype.isnative else np.dtype(dtype.name)


def _as_numpy(x, name: str):
    """(array, dtype tag, torch device or None): a view of `x`'s memory where one is possible."""
    if _is_torch(x):
        _require_values(x, name)
        torch = _torch()
        device = x.device
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()  # documented: device tensors are copied to the host
        t = t.resolve_conj().resolve_neg().contiguous()  # lazy conjugate or negation bits: the values as they read
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: its bits go as uint16, tagged
            return t.view(torch.int16).numpy().view(np.uint16), "BF16", device
        return t.numpy(), None, device
    a = np.asarray(x)
    if not _read_in_place(a):  # strided, unaligned or byte-swapped: one copy
        a = np.require(a, dtype=_native(a.dtype), requirements=["C", "A"])
    return a, _stored_dtype(a), None


def _copied_later(x, name: str):
    """For a tensor ``_as_stored`` would copy whole (strided, on a device, byte-swapped, a lazy
    conjugate or negation) and whose stored dtype its dtype alone tells: (template, tag, produce),
    an empty array of the dtype the copy will have, its dtype tag, and a function that makes the
    copy. None where ``_as_stored`` takes it as it lies, or must read its values to tell its dtype
    (an array ``load`` widened from bfloat16). A writer makes each copy as it writes it, so that
    one is held at a time."""
    if _is_torch(x):
        _require_values(x, name)
        if x.device.type == "cpu" and x.is_contiguous() and not x.is_conj() and not x.is_neg():
            return None
        torch = _torch()
        tag = "BF16" if x.dtype == torch.bfloat16 else None
        template = torch.empty(0, dtype=torch.int16 if tag else x.dtype).numpy()
        return (template.view(np.uint16) if tag else template), tag, lambda: _as_numpy(x, name)[0]
    if not isinstance(x, np.ndarray) or _read_in_place(x) or _stored_dtype(x) is not None:
        return None  # (load's bytes of another dtype are refused unless as they lie)
    native = _native(x.dtype)
    if native == np.float32 and (native.metadata or {}).get("widened_from") == "BF16":
        return None
    return np.empty(0, dtype=native), None, lambda: _as_numpy(x, name)[0]


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
        _require_utf8(name, f"{what}: the name {name!r}")


def _require_utf8(text: str, what: str) -> None:
    """A file holds UTF-8: a str with a lone surrogate (os.fsdecode's of a byte that is not UTF-8)
    has none, and would reach the library as a TypeError that names no argument."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not Unicode text ({e.reason} at index {e.start}, as os.fsdecode gives for "
                         "bytes that are not UTF-8): safetensors holds UTF-8") from None


def _on_cuda(x) -> bool:
    return _is_torch(x) and x.device.type == "cuda"


def _like(array: np.ndarray, device):
    """`array` as the caller's type: a torch tensor on `device` when the input was one."""
    if device is None:
        return array
    torch = _torch()
    t = torch.from_numpy(array)
    return t if device.type == "cpu" else t.to(device)


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _floating(x) -> bool:
    """float32, float16 or bfloat16: what a state dict has quantized (not float64, kept as nuq quantize
    keeps F64 tensors; not 8-bit floats)."""
    if _is_torch(x):
        torch = _torch()
        return x.dtype in (torch.float32, torch.float16, torch.bfloat16)
    dtype = np.asarray(x).dtype  # of either byte order ('>f4' is no np.float32 to ==)
    return dtype.kind == "f" and dtype.itemsize in (4, 2)


def _native_byte_order(array: np.ndarray) -> np.ndarray:
    """`array` in this machine's byte order (torch.from_numpy takes no other): a copy if it is not."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _is_float64(x) -> bool:
    if _is_torch(x):
        return x.dtype == _torch().float64
    return isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.dtype.itemsize == 8


def _rounded_to_float32(w, name: str):
    """A float64 array or tensor as float32, refusing a finite weight beyond float32's range (it would
    round to an infinity and be reported, or saturated, as one the caller never had). The float32
    copy is the one whole copy: the range is checked in slices of about 2^20 values along the first
    axis, so that its temporaries stay small."""
    if _is_torch(w):
        _require_values(w, name)
        torch = _torch()
        w = w.detach()
        w32 = w.float()
        isinf, isfinite = torch.isinf, torch.isfinite
    else:
        with np.errstate(over="ignore"):
            w32 = w.astype(np.float32)
        isinf, isfinite = np.isinf, np.isfinite
    scalar = len(w.shape) == 0
    checked, checked32 = (w.reshape(1), w32.reshape(1)) if scalar else (w, w32)
    row = int(np.prod(tuple(w.shape[1:]), dtype=np.int64))
    step = max(1, (1 << 20) // max(1, row))
    for start in range(0, checked.shape[0], step):
        overflow = isinf(checked32[start:start + step]) & isfinite(checked[start:start + step])
        if not bool(overflow.any()):
            continue
        mask = overflow.cpu().numpy() if _is_torch(overflow) else overflow  # the error's path: found on the host
        first = np.unravel_index(int(np.argmax(mask)), mask.shape)
        index = () if scalar else (start + int(first[0]),) + tuple(int(i) for i in first[1:])
        place = ", ".join(str(i) for i in index)
        raise ValueError(f"quantize: tensor '{name}' element [{place}] is {float(w[index]):g}, beyond float32's "
                         "range (3.4e+38), in which nuq quantizes; scale the tensor down first")
    return w32
