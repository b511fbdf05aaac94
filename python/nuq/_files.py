"""Safetensors files: read a tensor at a time (quantized ones as QuantizedTensor) and written
atomically, as the ``nuq`` command reads and writes them."""

from __future__ import annotations

import os

import numpy as np

from . import _nuq
from ._arrays import _as_stored, _check_names, _copied_later, _path, _require_utf8, _stored_dtype
from ._nuq import QuantizedTensor

def load(path: str | bytes | os.PathLike) -> dict:
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
    F6_*) as their bytes (uint8: the 8-bit ones of the tensor's shape, the packed ones with the last
    dimension in bytes, a packed scalar one-dimensional), their dtype and shape in
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
    return _nuq._float8_to_f32(np.require(array, requirements="C"), tag)  # (0-d stays 0-d)


def load_metadata(path: str | bytes | os.PathLike) -> dict:
    """The file's ``__metadata__`` without nuq's own description of its quantized tensors: what
    ``save(path, tensors, metadata=...)`` takes to write it again (a nuq model's architecture and
    data set, which ``nuq eval`` needs, among it)."""
    return _nuq._load_metadata(_path(path))


def save(path: str | bytes | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    """Write `tensors` (QuantizedTensor, numpy arrays, torch tensors) as safetensors, atomically.

    With QuantizedTensors the file is a quantized checkpoint as ``nuq quantize`` writes it (``nuq
    dequantize`` and ``nuq.load`` read it back); they must share one codebook and normalisation.
    Tensors quantized with "global" normalisation by separate calls each have their own statistics:
    the file records them as "per-tensor" (one call of ``quantize_state_dict`` shares one map).
    Grouped tensors are written in the grouped layout of ``nuq quantize --group-size``. Without
    QuantizedTensors the arrays go to the file as they lie (bfloat16 narrowed a piece at a time),
    none copied whole; one that must be copied (not C-contiguous, as a transposed view; a tensor on
    a GPU) is copied as it is written, one copy held at a time.
    """
    path = _path(path)
    if not hasattr(tensors, "items"):
        raise TypeError(f"save: a dict of name -> tensor, not {type(tensors).__name__}")
    _check_names(tensors.keys(), "save")
    if metadata is not None and not hasattr(metadata, "items"):
        raise TypeError(f"save: metadata must be a dict of strings to strings, not {type(metadata).__name__}")
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"save: metadata {key!r}: {value!r}: safetensors metadata maps strings to strings")
        _require_utf8(key, f"save: the metadata key {key!r}")
        _require_utf8(value, f"save: the metadata value of {key!r}")
    quantized = {k: v for k, v in tensors.items() if isinstance(v, QuantizedTensor)}
    plain = []
    for k, v in tensors.items():
        if not isinstance(v, QuantizedTensor):
            if v is None or isinstance(v, (str, bytes, dict)):
                raise TypeError(f"save: tensor '{k}': a {type(v).__name__} is not an array (numpy array, torch "
                                "tensor or QuantizedTensor)")
            later = _copied_later(v, k)
            if later is not None:  # copied as it is written, one at a time
                template, tag, produce = later
                plain.append((k, template, tag, [int(d) for d in v.shape], produce))
                continue
            shape = _element_shape(k, v)
            array, tag, _ = _as_stored(v, k)
            plain.append((k, array, tag, shape, None))
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
    if bits == 8:  # a byte an element: the tensor's own shape, a scalar's () too
        expected = tuple(shape)
    else:
        expected = (tuple(shape[:-1]) + (shape[-1] * bits // 8,) if shape and shape[-1] * bits % 8 == 0
                    else (count * bits // 8,))
    if not v.flags.c_contiguous or tuple(v.shape) != expected:
        raise ValueError(f"save: tensor '{name}': {tag} bytes of shape {tuple(v.shape)} (contiguous: "
                         f"{v.flags.c_contiguous}) are not the {tag} {shape} their dtype records; write them as "
                         "nuq.load gave them (a transposed or reshaped view would store its bytes in another order)")
    return shape
