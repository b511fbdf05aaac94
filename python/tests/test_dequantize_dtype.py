"""`nuq dequantize --dtype`: restored tensors as BF16 or F16 are the F32 restoration rounded to the
nearest value, ties to even, as numpy's and PyTorch's own casts round it (the references here);
`source` gives each tensor the dtype it had before quantizing."""

import json
import re
import struct

import numpy as np
import pytest
import torch

import nuq


def read_raw(path):
    """Each tensor of a safetensors file as (dtype, raw little-endian array), read by hand."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    kinds = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}
    return {name: (e["dtype"], np.frombuffer(data[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]],
                                             dtype=kinds[e["dtype"]]).reshape(e["shape"]))
            for name, e in header.items()}


def bf16_bits(f32):
    return torch.from_numpy(np.array(f32, dtype=np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


@pytest.mark.parametrize("options", [("-m", "msptq"), ("-m", "sptq", "--normalise", "per-channel"),
                                     ("-m", "msptq", "--group-size", "16"), ("-m", "uniform", "-b", "12")])
def test_restored_as_bf16_f16_or_each_tensors_own_dtype(nuq_cli, tmp_path, rng, options):
    w = {name: (rng.laplace(size=(24, 64)) * scale).astype(np.float32)
         for name, scale in (("a.weight", 0.02), ("b.weight", 3.0), ("c.weight", 1e-3))}
    tensors = {"a.weight": ("BF16", bf16_bits(w["a.weight"])), "b.weight": ("F16", w["b.weight"].astype(np.float16)),
               "c.weight": ("F32", w["c.weight"]), "norm.weight": ("BF16", bf16_bits(np.ones(64, np.float32)))}
    # Written by hand: nuq.save takes float arrays, and these must reach the file in their own dtypes.
    header, blobs, at = {}, [], 0
    for name, (dtype, array) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [at, at + array.nbytes]}
        blobs.append(array.tobytes())
        at += array.nbytes
    text = json.dumps(header).encode()
    (tmp_path / "in.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", *options)
    restored = {}
    for dtype in ("f32", "bf16", "f16", "source"):
        out = tmp_path / f"{dtype}.safetensors"
        report = json.loads(nuq_cli("dequantize", tmp_path / "q.safetensors", "-o", out, "--dtype", dtype, "--json"))
        assert report["dtype"] == dtype and report["copied"] == ["norm.weight"]
        restored[dtype] = read_raw(out)
        kept_dtype, kept = restored[dtype]["norm.weight"]  # kept as it was, whatever --dtype says
        assert kept_dtype == "BF16" and np.array_equal(kept, tensors["norm.weight"][1])
    for name in ("a.weight", "b.weight", "c.weight"):
        f32_dtype, f32 = restored["f32"][name]
        assert f32_dtype == "F32"
        as_bf16, as_f16 = restored["bf16"][name], restored["f16"][name]
        assert as_bf16[0] == "BF16" and np.array_equal(as_bf16[1], bf16_bits(f32))
        assert as_f16[0] == "F16" and np.array_equal(as_f16[1].view(np.uint16), f32.astype(np.float16).view(np.uint16))
        source_dtype, source = restored["source"][name]
        assert source_dtype == tensors[name][0]
        expected = {"F32": f32, "F16": as_f16[1], "BF16": as_bf16[1]}[source_dtype]
        assert np.array_equal(source.view(np.uint8), expected.view(np.uint8))

    # QuantizedTensor.dequantize(dtype) gives the CLI's values, and a bfloat16 result (float32 in
    # numpy, tagged) is saved as the CLI's BF16 bytes.
    loaded = nuq.load(tmp_path / "q.safetensors")
    for name in ("a.weight", "b.weight", "c.weight"):
        q = loaded[name]
        assert np.array_equal(q.dequantize(), restored["f32"][name][1])
        assert np.array_equal(q.dequantize("float16").view(np.uint16), restored["f16"][name][1].view(np.uint16))
        as_bf16 = q.dequantize(torch.bfloat16)
        assert as_bf16.dtype == np.float32 and as_bf16.dtype.metadata == {"widened_from": "BF16"}
        assert np.array_equal(bf16_bits(as_bf16), restored["bf16"][name][1])
        own = q.dequantize("source")
        assert {"F32": np.float32, "F16": np.float16, "BF16": np.float32}[q.dtype] == own.dtype
        assert np.array_equal(own.view(np.uint8), q.dequantize(q.dtype.lower()).view(np.uint8))
    nuq.save(tmp_path / "saved.safetensors", nuq.dequantize_state_dict(loaded, dtype="source"))
    saved = read_raw(tmp_path / "saved.safetensors")
    for name, (dtype, array) in restored["source"].items():
        assert saved[name][0] == dtype and np.array_equal(saved[name][1].view(np.uint8), array.view(np.uint8)), name
    as_torch = nuq.dequantize_state_dict(loaded, as_torch=True, dtype="bfloat16")
    assert torch.equal(as_torch["b.weight"].view(torch.int16),
                       torch.from_numpy(restored["bf16"]["b.weight"][1].view(np.int16).copy()))
    assert as_torch["norm.weight"].dtype == torch.float32  # kept tensors as load gives them (widened exactly)
    # "source": each tensor its own dtype, kept ones too, as nuq dequantize --dtype source writes them.
    own = nuq.dequantize_state_dict(loaded, as_torch=True, dtype="source")
    for name, (dtype, array) in restored["source"].items():
        expected = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
        assert own[name].dtype == expected, name
        bits = own[name].view(torch.int16 if dtype != "F32" else torch.int32).numpy()
        assert np.array_equal(bits.view(np.uint8), array.view(np.uint8)), name


def test_torch_tensors_restore_as_their_own_dtype(rng):
    w = torch.from_numpy(rng.laplace(size=(32, 40)).astype(np.float32) * 0.02)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        q = nuq.quantize(w.to(dtype), nuq.design("msptq"))
        f32 = q.dequantize()
        assert f32.dtype == torch.float32
        own = q.dequantize("source")
        assert own.dtype == dtype and torch.equal(own, f32.to(dtype))  # torch's cast rounds to nearest, ties to even
        assert q.dequantize("float16").dtype == torch.float16 and q.dequantize("bf16").dtype == torch.bfloat16


def test_numpys_spellings_of_a_dtype_name_the_same_restoration(rng):
    q = nuq.quantize(rng.laplace(size=(8, 16)).astype(np.float32), nuq.design("msptq"))
    half = q.dequantize("float16")
    for spelling in ("e", "<f2", "f2", "half", np.float16, np.dtype("<f2")):
        again = q.dequantize(spelling)
        assert again.dtype == np.float16 and np.array_equal(again.view(np.uint16), half.view(np.uint16)), spelling
    for spelling in ("f", "<f4", "f4", "single", np.float32):
        assert np.array_equal(q.dequantize(spelling), q.dequantize()), spelling
    for spelling in ("d", "<f8", "float64", np.float64, "i1", "not-a-dtype"):
        with pytest.raises(ValueError, match="nuq restores float32, bfloat16, float16 or 'source'"):
            q.dequantize(spelling)


def test_dequantize_refuses_other_dtypes_and_values_beyond_the_range(rng):
    q = nuq.quantize(rng.laplace(size=(8, 16)).astype(np.float32) * 3e4, nuq.design("msptq"))
    with pytest.raises(ValueError, match="nuq restores float32, bfloat16, float16 or 'source'"):
        q.dequantize("int8")
    with pytest.raises(ValueError, match=r"restored weight \[\d+, \d+\] \(.*\) lies beyond F16's range"):
        q.dequantize("float16")
    with pytest.raises(ValueError, match="tensor 'big': restored weight"):
        nuq.dequantize_state_dict({"big": q}, dtype=np.float16)
    assert np.isfinite(q.dequantize("bfloat16")).all()


def test_a_weight_beyond_the_range_is_an_error_naming_it(nuq_cli, nuq_binary, tmp_path, rng):
    import subprocess
    w = rng.laplace(size=(16, 32)).astype(np.float32) * 3e4  # outer levels beyond F16's 65504
    nuq.save(tmp_path / "in.safetensors", {"big.weight": w})
    nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", "-m", "msptq")
    result = subprocess.run([nuq_binary, "dequantize", str(tmp_path / "q.safetensors"), "-o",
                             str(tmp_path / "r.safetensors"), "--dtype", "f16"], capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tensor 'big.weight': restored weight" in result.stderr and "beyond F16's range" in result.stderr
    # The weight named by its place, as Python's own error names it.
    cli_place = re.search(r"restored weight (\[\d+, \d+\])", result.stderr)
    with pytest.raises(ValueError) as python_error:
        nuq.load(tmp_path / "q.safetensors")["big.weight"].dequantize("float16")
    assert cli_place and f"restored weight {cli_place.group(1)} " in str(python_error.value), result.stderr
    assert not (tmp_path / "r.safetensors").exists()
    nuq_cli("dequantize", tmp_path / "q.safetensors", "-o", tmp_path / "r.safetensors", "--dtype", "bf16")
