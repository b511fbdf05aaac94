"""nuq.save and nuq.load against the files the nuq tool reads and writes."""


import numpy as np
import pytest

import nuq



@pytest.fixture
def checkpoint(rng):
    return {"embed.weight": rng.laplace(size=(40, 24)).astype(np.float32),
            "layers.0.weight": 3 * rng.laplace(size=(16, 4, 3)).astype(np.float32),
            "layers.0.bias": rng.laplace(size=16).astype(np.float32),
            "step": np.array([7, 8], dtype=np.int64)}


@pytest.mark.parametrize("method,normalise", [("msptq", "global"), ("sptq", "per-channel"),
                                              ("uniform", "per-tensor")])
def test_codes_identical_to_nuq_quantize(nuq_cli, tmp_path, checkpoint, method, normalise):
    nuq.save(tmp_path / "in.safetensors", checkpoint)
    nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", "-m", method,
        "--normalise", normalise, "--device", "cpu", "--quantize-vectors")  # the biases too, as quantize_state_dict
    cli = nuq.load(tmp_path / "q.safetensors")
    ours = nuq.quantize_state_dict(checkpoint, nuq.design(method), normalise=normalise, quantize_vectors=True)
    assert set(cli) == set(ours)
    np.testing.assert_array_equal(cli["step"], checkpoint["step"])
    for name in ("embed.weight", "layers.0.weight", "layers.0.bias"):
        assert isinstance(cli[name], nuq.QuantizedTensor) and cli[name].shape == ours[name].shape
        np.testing.assert_array_equal(cli[name].codes, ours[name].codes)
        np.testing.assert_array_equal(cli[name].levels, ours[name].levels)
        assert cli[name].normalisation == normalise and cli[name].codebook.method == method
    # And the whole file, byte for byte: the header's statistics of every weight too.
    nuq.save(tmp_path / "ours.safetensors", ours)
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "q.safetensors").read_bytes()


@pytest.mark.parametrize("normalise", ["per-tensor", "per-channel"])
def test_a_tensor_of_several_pieces_is_the_file_nuq_quantize_writes(nuq_cli, tmp_path, rng, normalise):
    # 24 MB of floats: six pieces of 4 MiB, each cut in shares. Its statistics were joined share by
    # share in memory, share by share into each piece and then piece by piece by the CLI: the
    # recorded mean and stddev (and so per-tensor codes) differed in their last digits.
    w = (0.07 * rng.laplace(size=(3000, 2000)) - 0.007).astype(np.float32)
    nuq.save(tmp_path / "w.safetensors", {"w": w})
    nuq_cli("quantize", tmp_path / "w.safetensors", "-o", tmp_path / "cli.safetensors", "-m", "msptq",
            "--normalise", normalise, "--device", "cpu")
    nuq.save(tmp_path / "py.safetensors", {"w": nuq.quantize(w, nuq.design("msptq"), normalise=normalise)})
    assert (tmp_path / "py.safetensors").read_bytes() == (tmp_path / "cli.safetensors").read_bytes()


def test_one_tensor_file_matches_nuq_quantize_of_one_array(nuq_cli, tmp_path, rng):
    w = rng.laplace(size=(64, 80)).astype(np.float32)
    nuq.save(tmp_path / "w.safetensors", {"w": w})
    nuq_cli("quantize", tmp_path / "w.safetensors", "-o", tmp_path / "q.safetensors", "-m", "msptq")
    np.testing.assert_array_equal(nuq.load(tmp_path / "q.safetensors")["w"].codes,
                                  nuq.quantize(w, nuq.design("msptq")).codes)


@pytest.mark.parametrize("options", [("-m", "uniform", "-b", "12", "--normalise", "none"),  # a .grid
                                     ("-m", "uniform", "-b", "16", "--normalise", "per-tensor"),
                                     ("-m", "mulaw", "-b", "12"),  # 4,096 levels: a table
                                     ("-m", "msptq",), ("-m", "sptq", "--normalise", "per-channel"),
                                     ("-m", "msptq", "--group-size", "8")])
def test_nbytes_is_what_the_file_stores(nuq_cli, tmp_path, rng, options):
    """QuantizedTensor.nbytes is the report's bytes_after: a 16-bit uniform grid counts its two
    numbers, not the 65,536 levels it stands for."""
    import json
    nuq.save(tmp_path / "in.safetensors", {"w": rng.laplace(size=(40, 64)).astype(np.float32) * 0.02})
    report = json.loads(nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", "--json",
                                *options))
    (entry,) = report["tensors"]
    assert nuq.load(tmp_path / "q.safetensors")["w"].nbytes == entry["bytes_after"]


def test_saved_quantized_checkpoint_reads_back_and_nuq_dequantize_reads_it(nuq_cli, tmp_path, checkpoint):
    q = nuq.quantize_state_dict(checkpoint, nuq.design("msptq"), skip="*.bias", normalise="per-channel")
    nuq.save(tmp_path / "q.safetensors", q, metadata={"source": "test"})
    back = nuq.load(tmp_path / "q.safetensors")
    assert isinstance(back["embed.weight"], nuq.QuantizedTensor) and back["layers.0.weight"].shape == (16, 4, 3)
    np.testing.assert_array_equal(back["layers.0.bias"], checkpoint["layers.0.bias"])
    np.testing.assert_array_equal(back["embed.weight"].codes, q["embed.weight"].codes)
    nuq_cli("dequantize", tmp_path / "q.safetensors", "-o", tmp_path / "restored.safetensors")
    restored = nuq.load(tmp_path / "restored.safetensors")
    for name in ("embed.weight", "layers.0.weight"):
        np.testing.assert_array_equal(restored[name], q[name].dequantize())
    np.testing.assert_array_equal(restored["step"], checkpoint["step"])


def test_a_file_holds_one_codebook(tmp_path, rng):
    w = rng.laplace(size=(4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="another codebook"):
        nuq.save(tmp_path / "q.safetensors", {"a": nuq.quantize(w, nuq.design("sptq")),
                                              "b": nuq.quantize(w, nuq.design("msptq"))})


def test_bfloat16_and_float16_checkpoints(nuq_cli, tmp_path, rng):
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(rng.laplace(size=(12, 10)).astype(np.float32))
    nuq.save(tmp_path / "half.safetensors", {"bf": w.bfloat16(), "h": w.half()})
    plain = nuq.load(tmp_path / "half.safetensors")  # bfloat16 widened to float32, float16 kept
    np.testing.assert_array_equal(plain["bf"], w.bfloat16().float().numpy())
    assert plain["h"].dtype == np.float16
    nuq_cli("quantize", tmp_path / "half.safetensors", "-o", tmp_path / "q.safetensors", "-m", "sptq")
    cli = nuq.load(tmp_path / "q.safetensors")
    assert cli["bf"].dtype == "BF16" and cli["h"].dtype == "F16"
    ours = nuq.quantize_state_dict({"bf": w.bfloat16(), "h": w.half()}, nuq.design("sptq"))
    for name in ("bf", "h"):
        np.testing.assert_array_equal(cli[name].codes, ours[name].codes)


def test_a_loaded_bfloat16_checkpoint_is_written_and_quantized_as_bfloat16_again(tmp_path, rng):
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(rng.laplace(size=(12, 10)).astype(np.float32))
    nuq.save(tmp_path / "in.safetensors", {"bf": w.bfloat16(), "h": w.half(), "step": np.arange(3)})
    loaded = nuq.load(tmp_path / "in.safetensors")
    assert loaded["bf"].dtype == np.float32 and loaded["bf"].dtype.metadata == {"widened_from": "BF16"}
    nuq.save(tmp_path / "again.safetensors", loaded)
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "in.safetensors").read_bytes()

    nuq.save(tmp_path / "transposed.safetensors", {"t": loaded["bf"].T})  # a view: copied, still BF16
    t = nuq.load(tmp_path / "transposed.safetensors")["t"]
    assert t.dtype.metadata == {"widened_from": "BF16"}
    np.testing.assert_array_equal(t, w.bfloat16().float().numpy().T)

    codebook = nuq.design("msptq")
    q = nuq.quantize(loaded["bf"], codebook)
    assert q.dtype == "BF16"
    np.testing.assert_array_equal(q.codes, nuq.quantize(w.bfloat16(), codebook).codes)
    assert nuq.quantize_state_dict(loaded, codebook)["bf"].dtype == "BF16"
    x = loaded["bf"][:2]  # the tag does not stop a tagged array from being an operand
    np.testing.assert_allclose(nuq.qgemm(x, q), x @ q.dequantize().T, rtol=1e-5, atol=1e-5)

    changed = loaded["bf"]
    changed += np.float32(1e-3)  # in place: the tag stays, the values are no longer bfloat16's
    with pytest.warns(UserWarning, match="'bf'.*cannot represent"):
        nuq.save(tmp_path / "changed.safetensors", {"bf": changed})
    back = nuq.load(tmp_path / "changed.safetensors")["bf"]
    assert back.dtype == np.float32 and back.dtype.metadata is None
    np.testing.assert_array_equal(back, changed)
    with pytest.warns(UserWarning, match="cannot represent") as warned:
        assert nuq.quantize(changed, codebook).dtype == "F32"
        assert nuq.quantize_state_dict({"bf": changed}, codebook)["bf"].dtype == "F32"
    assert [w.filename for w in warned] == [__file__, __file__]  # the warnings point at the caller


def test_broken_files_raise_value_errors_naming_the_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ValueError, match="bad.safetensors"):
        nuq.load(bad)


def test_grouped_files_of_nuq_quantize_load_and_dequantize_as_nuq_does(nuq_cli, tmp_path, checkpoint):
    nuq.save(tmp_path / "in.safetensors", checkpoint)
    nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "g.safetensors", "-m", "msptq",
        "--group-size", "8", "--skip", "layers")  # embed.weight: rows of 24 = three groups of 8
    nuq_cli("dequantize", tmp_path / "g.safetensors", "-o", tmp_path / "restored.safetensors")
    grouped = nuq.load(tmp_path / "g.safetensors")["embed.weight"]
    assert grouped.group_size == 8 and grouped.shape == (40, 24)
    np.testing.assert_array_equal(grouped.dequantize(), nuq.load(tmp_path / "restored.safetensors")["embed.weight"])
    x = np.ones((1, 24), dtype=np.float32)
    np.testing.assert_allclose(nuq.qgemm(x, grouped), x @ grouped.dequantize().T, rtol=1e-5, atol=1e-5)


def test_every_array_saved_loads_again_up_to_numpys_32_dimensions(tmp_path):
    nine, most = np.full((1,) * 9, 1.5, np.float32), np.full((1,) * 32, 2.5, np.float32)
    nuq.save(tmp_path / "ranks.safetensors", {"nine": nine, "most": most})
    back = nuq.load(tmp_path / "ranks.safetensors")
    np.testing.assert_array_equal(back["nine"], nine)
    np.testing.assert_array_equal(back["most"], most)
    q = nuq.quantize(np.linspace(-1, 1, 8, dtype=np.float32).reshape((2,) * 3 + (1,) * 6), nuq.design("msptq"))
    nuq.save(tmp_path / "q.safetensors", {"w": q})
    assert nuq.load(tmp_path / "q.safetensors")["w"].dequantize().shape == (2,) * 3 + (1,) * 6


def test_a_tensor_quantized_alone_joins_a_file_of_per_tensor_ones(tmp_path, rng):
    # A file written from separate nuq.quantize calls records per-tensor normalisation; a tensor
    # quantized later (global, its own map) is written beside its tensors, each restored exactly.
    cb = nuq.design("msptq")
    a, b = (rng.laplace(size=(8, 16)).astype(np.float32) for _ in range(2))
    nuq.save(tmp_path / "ab.safetensors", {"a": nuq.quantize(a, cb), "b": nuq.quantize(b, cb)})
    loaded = nuq.load(tmp_path / "ab.safetensors")
    c = nuq.quantize(3 * b, cb)
    nuq.save(tmp_path / "ac.safetensors", {"a": loaded["a"], "c": c})
    back = nuq.load(tmp_path / "ac.safetensors")
    assert [back[n].normalisation for n in ("a", "c")] == ["per-tensor", "per-tensor"]
    np.testing.assert_array_equal(back["a"].dequantize(), loaded["a"].dequantize())
    np.testing.assert_array_equal(back["c"].dequantize(), c.dequantize())
    with pytest.raises(ValueError, match="another codebook or normalisation"):  # per-channel is another map
        nuq.save(tmp_path / "mixed.safetensors", {"a": loaded["a"], "p": nuq.quantize(b, cb, normalise="per-channel")})


@pytest.mark.parametrize("architecture,normalise", [("mlp", "global"), ("cnn", "global"), ("mlp", "per-tensor"),
                                                    ("cnn", "per-channel")])
def test_a_nuq_model_quantized_from_python_is_the_file_nuq_quantize_writes(nuq_cli, tmp_path, architecture, normalise):
    # The statistics of every path are joined from the same pieces in the same order: a nuq model's
    # state dict quantized in Python is byte for byte the CLI's file (the global mean once differed
    # in its last digits, the CLI's model path summing each parameter whole; then each tensor's own
    # mean and stddev, which that path still took whole).
    import struct
    rng = np.random.default_rng(4)
    (tmp_path / "mnist").mkdir()
    for split in ("train", "t10k"):
        for kind, array in (("images-idx3", rng.integers(0, 256, (20, 28, 28))), ("labels-idx1", np.arange(20) % 10)):
            with open(tmp_path / "mnist" / f"{split}-{kind}-ubyte", "wb") as f:
                f.write(struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
                f.write(array.astype(np.uint8).tobytes())
    model = tmp_path / "model.safetensors"
    nuq_cli("train", "--model", architecture, "--epochs", "1", "--data", tmp_path, "-o", model)
    nuq_cli("quantize", model, "-m", "msptq", "-o", tmp_path / "cli.safetensors", "--device", "cpu",
            "--normalise", normalise)
    ours = nuq.quantize_state_dict(nuq.load(model), nuq.design("msptq"), quantize_vectors=True, device="cpu",
                                   normalise=normalise)
    nuq.save(tmp_path / "py.safetensors", ours, metadata=nuq.load_metadata(model))
    assert (tmp_path / "py.safetensors").read_bytes() == (tmp_path / "cli.safetensors").read_bytes()


def test_quantized_codes_too_large_for_memory_are_named(tmp_path):
    """A quantized tensor whose codes do not fit in memory (16 GiB claimed by a sparse file, loaded
    under a 6 GiB address-space limit) is a ValueError naming the file and tensor, as a plain
    tensor's numpy MemoryError is, not a bare MemoryError("std::bad_alloc")."""
    import json, os, struct, subprocess, sys
    small = tmp_path / "small.safetensors"
    nuq.save(small, {"w": nuq.quantize(np.random.default_rng(0).laplace(size=(8, 64)).astype(np.float32),
                                       nuq.design("msptq"))})
    data = small.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    rows, cols = 1 << 18, 1 << 18
    description = json.loads(header["__metadata__"]["nuq.quantized"])
    description["tensors"]["w"].update(rows=rows, cols=cols, shape=[rows, cols])
    header["__metadata__"]["nuq.quantized"] = json.dumps(description)
    assert header["w.codebook"]["data_offsets"] == [0, 16]
    header["w.codes"] = {"dtype": "U8", "shape": [rows, cols // 4], "data_offsets": [16, 16 + rows * cols // 4]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    big = tmp_path / "big.safetensors"
    big.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:8 + length + 16])
    os.truncate(big, 8 + len(text) + 16 + rows * cols // 4)  # sparse: no disk taken
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); import nuq\n"
            "try:\n    nuq.load(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)")
    # (No GPU in the child: a CUDA context reserves more address space than the limit leaves.)
    result = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert result.stdout.startswith(f"ValueError {big}: tensor 'w': MemoryError"), result.stdout + result.stderr


def test_a_copy_made_as_it_is_written_is_the_view_and_a_failure_leaves_no_file(tmp_path, monkeypatch):
    # Transposed and byte-swapped views are copied as save writes them: the file holds their values
    # in their shapes. A copy that fails midway (here: b's, after a's was written) leaves no file
    # and no temporary behind, and is raised as it was.
    import nuq._arrays
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    views = {"a": w.T, "b": w.astype(">f4"), "c": w}
    nuq.save(tmp_path / "ok.safetensors", views)
    back = nuq.load(tmp_path / "ok.safetensors")
    for name, view in views.items():
        assert back[name].dtype == np.float32 and np.array_equal(back[name], view), name
    made = []
    as_numpy = nuq._arrays._as_numpy

    def failing(x, name):
        made.append(name)
        if name == "b":
            raise RuntimeError("the copy failed")
        return as_numpy(x, name)

    monkeypatch.setattr(nuq._arrays, "_as_numpy", failing)
    with pytest.raises(RuntimeError, match="the copy failed"):
        nuq.save(tmp_path / "failed.safetensors", views)
    assert made == ["c", "a", "b"]  # c read as it lies; the copies made as they are written, in name order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.safetensors"]
