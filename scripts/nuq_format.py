"""nuq's quantized format (docs/format.md) read with numpy alone, sharing no code with nuq.

Used by tests/format/test_format.py, which checks every file nuq writes against `nuq dequantize`,
and by scripts/gpu_interop.py on the GPU machine, which checks what PyTorch reads.
"""
import json
import struct

import numpy as np

ELEMENT = {"BOOL": (np.bool_, 1), "U8": (np.uint8, 1), "I8": (np.int8, 1), "U16": (np.uint16, 2),
           "I16": (np.int16, 2), "F16": (np.float16, 2), "BF16": (np.uint16, 2), "U32": (np.uint32, 4),
           "I32": (np.int32, 4), "F32": (np.float32, 4), "U64": (np.uint64, 8), "I64": (np.int64, 8),
           "F64": (np.float64, 8), "C64": (np.complex64, 8),
           # numpy has no 8-bit floats: their bytes
           "F8_E4M3": (np.uint8, 1), "F8_E5M2": (np.uint8, 1), "F8_E8M0": (np.uint8, 1),
           "F8_E4M3FNUZ": (np.uint8, 1), "F8_E5M2FNUZ": (np.uint8, 1)}
PACKED_BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}  # sub-byte floats: read as their packed bytes
SUFFIXES = (".codes", ".codebook", ".grid", ".scales")


def read(path):
    """(header, metadata, {name: array}) with every structural rule of the format checked."""
    blob = open(path, "rb").read()
    (length,) = struct.unpack("<Q", blob[:8])
    assert (8 + length) % 8 == 0, f"{path}: data does not start 8-byte aligned"
    header = json.loads(blob[8:8 + length])
    metadata = header.pop("__metadata__", {})
    data = blob[8 + length:]
    arrays, spans = {}, []
    for name, info in header.items():
        begin, end = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if info["dtype"] in PACKED_BITS:
            assert count * PACKED_BITS[info["dtype"]] % 8 == 0, f"{path}: {name}: not whole bytes"
            assert end - begin == count * PACKED_BITS[info["dtype"]] // 8, f"{path}: {name} spans {end - begin} bytes"
            arrays[name] = np.frombuffer(data, dtype=np.uint8, count=end - begin, offset=begin)
        else:
            dtype, size = ELEMENT[info["dtype"]]
            assert begin % size == 0, f"{path}: {name} ({info['dtype']}) at offset {begin}"
            assert end - begin == count * size, f"{path}: {name} spans {end - begin} bytes"
            arrays[name] = np.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(info["shape"])
        spans.append((begin, end))
    spans.sort()
    position = 0
    for begin, end in spans:
        assert begin == position, f"{path}: hole or overlap at {begin}"
        position = end
    assert position == len(data), f"{path}: {len(data) - position} trailing bytes"
    return length, metadata, arrays


def unpack(codes, cols, bits):
    """LSB-first codes, each row starting on a byte -> [rows, cols] integers."""
    if bits == 16:
        return codes.astype(np.int64)
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    values = (codes[:, :, None] >> shifts) & ((1 << bits) - 1)
    return values.reshape(codes.shape[0], codes.shape[1] * per_byte)[:, :cols].astype(np.int64)  # rows may be 0


def decode(metadata, arrays):
    description = json.loads(metadata["nuq.quantized"])
    # Version 2 lists the tensors kept under names like a quantized tensor's parts (and only then);
    # version 3 records a mu-law codebook of more than 256 levels by its parameters, version 4 a
    # Lloyd-Max one (and only then).
    kept = set(description.get("kept", []))
    codebook = description.get("codebook", {})
    method = codebook.get("method")
    by_parameters = method in ("mulaw", "lloyd-max") and "levels" not in codebook
    assert by_parameters == (method in ("mulaw", "lloyd-max") and codebook.get("levels_count", 0) > 256), codebook
    expected = (4 if method == "lloyd-max" else 3) if by_parameters else 2 if kept else 1
    assert description["version"] == expected, description["version"]
    assert all(name.endswith(SUFFIXES) and name in arrays for name in kept), kept
    restored = {}
    for name, info in description["tensors"].items():
        rows, cols, bits = info["rows"], info["cols"], info["bits"]
        assert bits in (1, 2, 4, 8, 16)
        codes = arrays[name + ".codes"]
        assert codes.dtype == (np.uint16 if bits == 16 else np.uint8)
        assert codes.shape == ((rows, cols) if bits == 16 else (rows, (cols * bits + 7) // 8))
        codes = unpack(codes, cols, bits)
        if info.get("group_size"):  # each run of group_size weights: mean + its scale * the normalised level
            size = info["group_size"]
            table, scales = arrays[name + ".codebook"], arrays[name + ".scales"]
            assert table.shape == (1, 1 << bits) and scales.shape == (rows, cols // size)
            levels = (info["mean"] + scales.astype(np.float64)[:, :, None] * table[0].astype(np.float64)).astype(np.float32)
            grouped = codes.reshape(rows, cols // size, size)
            values = np.take_along_axis(levels, grouped, axis=2)
        elif name + ".grid" in arrays and name + ".grid" not in kept:
            offset, scale = arrays[name + ".grid"]
            values = (offset + scale * codes.astype(np.float64)).astype(np.float32)
        else:
            table = arrays[name + ".codebook"]
            assert table.dtype == np.float32 and table.shape[1] == 1 << bits and table.shape[0] in (1, rows)
            values = table[np.arange(rows)[:, None] if table.shape[0] > 1 else 0, codes]
        restored[name] = values.reshape(info["shape"])
    parts = {name + suffix for name in description["tensors"] for suffix in SUFFIXES} - kept
    for name in arrays:  # every tensor is a described tensor's part, or stored as it was
        assert name in parts or name in kept or not name.endswith(SUFFIXES), f"{name}: undescribed codes"
    return description, restored
