#!/usr/bin/env python3
"""Every file `nuq quantize` writes, read by a reader that shares no code with nuq.

For nuq's own model layout and for a foreign checkpoint (F32, F16, BF16 and integer tensors), at
every stored width (1, 2, 4, 8, 16 bits; 3 and 12 bits stored at 4 and 16) and every normalisation,
this script parses the safetensors container with numpy alone, checks that every tensor lies at a
multiple of its element size and that the header carries no per-level lists beyond 256 levels,
decodes the codes from docs/format.md and compares each weight with what `nuq dequantize` writes,
bit for bit, and recomputes its nuq.restored_from fingerprint with Python's json. Then the
dequantized file must quantize again, and an already quantized one must not.
Last, a checkpoint other tools quantized in part (FP8, GPTQ, AQLM, MX F4): only its plain matrices
are quantized, everything else comes back byte for byte.

Usage: test_format.py NUQ_BINARY   (exit 77: numpy missing, the test is skipped)
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:  # ctest reports the test as skipped
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from nuq_format import decode, read  # noqa: E402  (the independent reader, beside gpu_interop.py)

def whole_as_integers(value):
    """JSON's one kind of number: a float that holds an integer (within int64) is that integer."""
    if isinstance(value, dict):
        return {k: whole_as_integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_as_integers(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def restored_from(description):
    """nuq.restored_from as docs/format.md defines it: 64-bit FNV-1a of the canonical text of the
    run's description without its tensors, kept and version, with its run's group sizes."""
    run = {k: v for k, v in description.items() if k not in ("tensors", "kept", "version")}
    sizes = sorted({t.get("group_size", 0) for t in description.get("tensors", {}).values()})
    if "group_sizes" not in run and sizes and sizes[-1] != 0:  # written before the key: its tensors' (0: none)
        run["group_sizes"] = sizes
    text = json.dumps(whole_as_integers(run), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    h = 0xcbf29ce484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def bf16(values):
    """float32 -> BF16 bits, round to nearest even."""
    bits = values.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write(path, tensors, metadata):
    """A safetensors file from {name: (dtype name, array[, shape])} (a shape for packed F4/F6 bytes)."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, (dtype, array, *shape) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        shape = list(shape[0]) if shape else list(array.shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def sources(folder, rng):
    laplace = lambda *shape, scale=0.05: rng.laplace(0.0, scale, size=shape).astype(np.float32)
    foreign = os.path.join(folder, "foreign.safetensors")
    write(foreign, {"encoder.weight": ("F32", laplace(64, 48)),
                    "encoder.conv": ("F16", laplace(8, 3, 3, 3, scale=0.2).astype(np.float16)),
                    "norm.weight": ("BF16", bf16(1.0 + laplace(48, scale=0.01))),
                    "steps": ("I64", np.array([1234], dtype=np.int64))}, {"format": "pt"})
    model = os.path.join(folder, "mlp.safetensors")
    layers = {"fc1.weight": (512, 784), "fc1.bias": (512,), "fc2.weight": (512, 512), "fc2.bias": (512,),
              "fc3.weight": (10, 512), "fc3.bias": (10,)}
    write(model, {name: ("F32", laplace(*shape)) for name, shape in layers.items()},
          {"format": "pt", "nuq.architecture": "mlp", "nuq.dataset": "mnist"})
    return {"foreign": foreign, "mlp": model}


def peer_checkpoint(path, rng):
    """A checkpoint other tools quantized in part: FP8 weights with their block scales, GPTQ
    (I32 qweight, F16 scales), AQLM (I16 codes, F16 codebooks and scales), MX F4 blocks, C64."""
    laplace = lambda *shape: rng.laplace(0.0, 0.05, size=shape).astype(np.float32)
    raw = lambda count: rng.integers(0, 256, size=count, dtype=np.uint8)
    layer = "model.layers.0."
    write(path, {layer + "mlp.down_proj.weight": ("F8_E4M3", raw(32 * 64).reshape(32, 64)),
                 layer + "mlp.down_proj.weight_scale_inv": ("F32", laplace(2, 2)),
                 layer + "self_attn.o_proj.qweight": ("I32", rng.integers(-2**31, 2**31, (8, 64), dtype=np.int32)),
                 layer + "self_attn.o_proj.qzeros": ("I32", rng.integers(0, 2**31, (1, 8), dtype=np.int32)),
                 layer + "self_attn.o_proj.scales": ("F16", laplace(1, 64).astype(np.float16)),
                 layer + "self_attn.q_proj.codes": ("I16", rng.integers(-2**15, 2**15, (64, 2), dtype=np.int16)),
                 layer + "self_attn.q_proj.codebooks": ("F16", laplace(1, 256, 8).astype(np.float16)),
                 layer + "self_attn.q_proj.scales": ("F16", laplace(64, 1, 1, 1).astype(np.float16)),
                 layer + "mlp.experts.blocks": ("F4", raw(16 * 32 // 2), (16, 32)),
                 layer + "mlp.up_proj.weight": ("BF16", bf16(laplace(64, 48))),
                 layer + "input_layernorm.weight": ("BF16", bf16(1.0 + laplace(48))),
                 "model.embed_tokens.weight": ("F32", laplace(100, 48)),
                 "rope.freqs": ("C64", (laplace(8) + 1j * laplace(8)).astype(np.complex64))}, {"format": "pt"})
    return {layer + "mlp.up_proj.weight", "model.embed_tokens.weight"}, \
        {layer + "self_attn.o_proj.scales", layer + "self_attn.q_proj.codes", layer + "self_attn.q_proj.scales"}


def check_peer(nuq, folder, rng):
    """Only the plain matrices are quantized; every other tensor (scales of modules another tool
    quantized among them) comes back byte for byte, and those named like nuq's parts are listed."""
    source = os.path.join(folder, "peer.safetensors")
    quantized, ambiguous = peer_checkpoint(source, rng)
    _, _, original = read(source)
    for extra in ([], ["--normalise", "per-channel", "--group-size", "16"]):
        report = json.loads(run(nuq, "quantize", source, "-o", source + ".q", "--device", "cpu", "--json", *extra))
        assert {t["name"] for t in report["tensors"]} == quantized, report["tensors"]
        _, metadata, arrays = read(source + ".q")
        description, ours = decode(metadata, arrays)
        assert set(description["kept"]) == ambiguous and set(ours) == quantized, description.get("kept")
        run(nuq, "dequantize", source + ".q", "-o", source + ".d")
        _, _, theirs = read(source + ".d")
        for name, array in original.items():
            for stored in (arrays, theirs):
                if name not in quantized:
                    assert stored[name].tobytes() == array.tobytes(), f"{name} was not kept as it was"
        for name, values in ours.items():
            assert np.array_equal(theirs[name].view(np.uint32), values.view(np.uint32)), name
        run(nuq, "quantize", source + ".d", "-o", source + ".again", "--device", "cpu")  # loads again


def check_sharded(nuq, folder, rng):
    """A sharded checkpoint (folder and index) quantized with every normalisation, groups too: each
    shard out is read on its own (the shards before the last, shard by shard without global
    normalisation, carry headers rewritten at the end), records the whole checkpoint's statistics,
    and decodes as `nuq dequantize` restores it."""
    source = os.path.join(folder, "sharded")
    os.makedirs(source)
    weight_map, names = {}, []
    for s in range(3):
        name = f"model-0000{s + 1}-of-00003.safetensors"
        tensors = {f"layers.{s}.weight": ("F32", rng.laplace(0.01 * s, 0.05 * (s + 1), size=(32, 48)).astype(np.float32)),
                   f"layers.{s}.norm": ("BF16", bf16(1.0 + rng.laplace(0.0, 0.01, size=48).astype(np.float32)))}
        write(os.path.join(source, name), tensors, {"format": "pt"})
        weight_map.update({t: name for t in tensors})
        names.append(name)
    with open(os.path.join(source, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    for normalise, extra in (("global", []), ("per-tensor", []), ("per-channel", []), ("per-channel", ["--group-size", "16"]),
                             ("none", [])):
        out = os.path.join(folder, f"sharded-{normalise}{len(extra)}.q")
        report = json.loads(run(nuq, "quantize", os.path.join(source, "model.safetensors.index.json"), "-o", out,
                                "--normalise", normalise, "--device", "cpu", "--json", *extra))
        weights = np.concatenate([read(os.path.join(source, n))[2][f"layers.{s}.weight"].ravel().astype(np.float64)
                                  for s, n in enumerate(names)])
        for name in names:
            path = os.path.join(out, name)
            _, metadata, arrays = read(path)
            description, ours = decode(metadata, arrays)
            # The statistics of every quantized weight of the checkpoint, in every shard's header.
            assert abs(description["mean"] - weights.mean()) <= 1e-12 + 1e-9 * abs(weights.mean()), (path, description["mean"])
            assert abs(description["stddev"] - weights.std()) <= 1e-9 * weights.std(), (path, description["stddev"])
            run(nuq, "dequantize", path, "-o", path + ".d")
            _, _, theirs = read(path + ".d")
            for tensor, values in ours.items():
                assert np.array_equal(theirs[tensor].view(np.uint32), values.view(np.uint32)), f"{path}: {tensor}"
            os.remove(path + ".d")
        assert report["output_bytes"] == sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))


def run(nuq, *arguments, expect=0):
    result = subprocess.run([nuq, *arguments], capture_output=True, text=True)
    assert result.returncode == expect, f"nuq {' '.join(arguments)}: exit {result.returncode}\n{result.stderr}"
    return result.stdout


def main():
    nuq = sys.argv[1]
    designs = [("uniform", 1), ("sptq", 2), ("ternary", 2), ("uniform", 3), ("uniform", 4), ("mulaw", 8),
               ("uniform", 12), ("mulaw", 12), ("lloyd-max", 12), ("uniform", 16)]
    with tempfile.TemporaryDirectory() as folder:
        files = sources(folder, np.random.default_rng(7))
        checked = 0
        for source, path in files.items():
            for method, bits in designs:
                for normalise in ("global", "per-tensor", "per-channel", "none"):
                    if normalise == "per-channel" and bits > 8:
                        continue  # refused: 65536 levels a row
                    if source == "mlp" and normalise == "none" and bits < 8:
                        continue  # unnormalised small weights against a unit design: nothing new to read
                    stem = os.path.join(folder, f"{source}-{method}{bits}-{normalise}")
                    grouped = source == "foreign" and normalise == "per-channel"
                    extra = ["--group-size", "16", "--skip", "conv"] if grouped else []  # conv rows: 27 weights
                    report = json.loads(run(nuq, "quantize", path, "-o", stem + ".q", "-m", method, "-b", str(bits),
                                            "--normalise", normalise, "--device", "cpu", "--json", *extra))
                    length, metadata, arrays = read(stem + ".q")
                    description, ours = decode(metadata, arrays)
                    levels = description["codebook"]["levels_count"]
                    assert levels <= 256 or "levels" not in description["codebook"], "per-level lists in the header"
                    assert length < 16384, f"{stem}.q: a {length}-byte header"
                    assert report["output_bytes"] == os.path.getsize(stem + ".q")
                    if grouped:  # bits per weight all in: the codes, one F32 scale per 16 weights, the shared table
                        for t in report["tensors"]:
                            stored = t["bits"]
                            rows, cols = t["shape"][0], int(np.prod(t["shape"][1:]))
                            expected = 8 * (rows * -(-cols * stored // 8) + 4 * (rows * cols // 16) + 4 * 2**stored)
                            assert t["bytes_after"] * 8 == expected, t
                    run(nuq, "dequantize", stem + ".q", "-o", stem + ".d")
                    _, restored_metadata, theirs = read(stem + ".d")
                    assert restored_metadata["nuq.restored_from"] == restored_from(description), stem
                    for name, values in ours.items():
                        assert theirs[name].dtype == np.float32 and theirs[name].shape == values.shape, name
                        assert np.array_equal(theirs[name].view(np.uint32), values.view(np.uint32)), \
                            f"{stem}: {name} decodes differently from nuq dequantize"
                    for name, array in arrays.items():  # tensors that were not quantized come back as they were
                        if not name.endswith((".codes", ".codebook", ".grid", ".scales")):
                            assert np.array_equal(theirs[name], array), name
                    run(nuq, "quantize", stem + ".d", "-o", stem + ".again", "--device", "cpu")  # loads again
                    run(nuq, "quantize", stem + ".q", "-o", stem + ".twice", expect=1)  # already quantized
                    for suffix in (".q", ".d", ".again"):
                        os.remove(stem + suffix)
                    checked += 1
        assert checked >= 40, checked
        check_peer(nuq, folder, np.random.default_rng(11))
        check_sharded(nuq, folder, np.random.default_rng(13))
        print(f"{checked} files read independently: aligned, decoded as nuq dequantize restores them")


if __name__ == "__main__":
    main()
