"""quantize_state_dict keeps what `nuq quantize` keeps, with the same codes; peers' checkpoints (FP8,
GPTQ, AQLM names, MX F4, complex) go through save/load; a file's metadata survives load -> save."""

import json
import pathlib
import re
import struct
import sys
import warnings

import numpy as np
import pytest

import nuq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import nuq_format  # noqa: E402  (the independent numpy reader of the format)


@pytest.fixture
def llm(rng):
    laplace = lambda *shape: (0.02 * rng.laplace(size=shape)).astype(np.float32)
    return {"model.embed_tokens.weight": laplace(50, 32),
            "model.layers.0.self_attn.q_proj.weight": laplace(32, 32),
            "model.layers.0.self_attn.q_proj.bias": laplace(32),
            "model.layers.0.input_layernorm.weight": 1.0 + laplace(32),
            "model.layers.0.mlp.up_proj.weight": laplace(64, 32),
            "logit_scale": np.array(2.6, dtype=np.float32),
            "lm_head.weight": laplace(50, 32)}


def test_defaults_keep_vectors_and_give_the_codes_of_nuq_quantize(nuq_cli, tmp_path, llm):
    nuq.save(tmp_path / "in.safetensors", llm)
    nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", "-m", "msptq", "--device", "cpu")
    cli = nuq.load(tmp_path / "q.safetensors")
    ours = nuq.quantize_state_dict(llm, nuq.design("msptq"))
    matrices = {k for k, v in llm.items() if v.ndim == 2}
    assert {k for k, v in ours.items() if isinstance(v, nuq.QuantizedTensor)} == matrices
    for name in llm:
        if name in matrices:  # global normalisation over the matrices alone, as the CLI
            np.testing.assert_array_equal(ours[name].codes, cli[name].codes)
        else:
            assert ours[name] is llm[name]
            np.testing.assert_array_equal(cli[name], llm[name])
    every = nuq.quantize_state_dict(llm, nuq.design("msptq"), quantize_vectors=True)
    assert all(isinstance(v, nuq.QuantizedTensor) for v in every.values())


def test_masks_are_kept_as_nuq_quantize_keeps_them(nuq_cli, tmp_path, llm):
    """Masks (GPT-2's causal F32 [1, 1, n, n] of 0 and 1, Swin's additive one of 0 and -100): kept
    with a warning, as the CLI keeps them, and the weights get the codes they would get without the
    masks (with global normalisation the masks would otherwise set every weight's scale). A third
    value makes a tensor weights."""
    causal = np.tril(np.ones((16, 16), np.float32)).reshape(1, 1, 16, 16)
    almost = np.tril(np.ones((8, 8), np.float32))
    almost[0, 3] = 0.5
    additive = np.where(np.tril(np.ones((4, 9, 9))) > 0, 0.0, -100.0).astype(np.float16)
    checker = np.where(np.indices((8, 8)).sum(0) % 2, 0.02, -0.02).astype(np.float32)  # two values, weights
    sd = dict(llm, **{"h.0.attn.mask": causal, "h.1.attn.mask": causal.copy(), "almost.mask": almost,
                      "layers.0.attn_mask": additive, "checker.weight": checker})
    nuq.save(tmp_path / "in.safetensors", sd)
    out = nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", "--device", "cpu", "--json")
    assert set(json.loads(out)["kept"]) >= {"h.0.attn.mask", "h.1.attn.mask", "layers.0.attn_mask"}
    cli = nuq.load(tmp_path / "q.safetensors")
    with pytest.warns(UserWarning, match=r"masks kept as they are \(only 0 and 1, as GPT-2's causal attn.bias, or 0 and "
                      r"one value <= -100 or -inf, added to attention scores; not weights\): h.0.attn.mask, h.1.attn.mask, "
                      r"layers.0.attn_mask"):
        ours = nuq.quantize_state_dict(sd, nuq.design("sptq"))
    without = nuq.quantize_state_dict(dict(llm, **{"almost.mask": almost, "checker.weight": checker}), nuq.design("sptq"))
    assert ours["h.0.attn.mask"] is sd["h.0.attn.mask"]
    np.testing.assert_array_equal(cli["h.1.attn.mask"], causal)
    np.testing.assert_array_equal(cli["layers.0.attn_mask"], additive)
    for name, q in without.items():
        if isinstance(q, nuq.QuantizedTensor):
            np.testing.assert_array_equal(ours[name].codes, q.codes)
            np.testing.assert_array_equal(cli[name].codes, q.codes)
    torch = pytest.importorskip("torch")
    mask = torch.from_numpy(causal).to(torch.bfloat16)
    with pytest.warns(UserWarning, match="masks kept as they are"):
        assert nuq.quantize_state_dict(dict(llm, mask=mask), nuq.design("sptq"))["mask"] is mask
    # 0 and -inf (PyTorch's causal masks): a mask too, whether non-finite weights are refused or
    # saturated, as the CLI keeps it; 0 and +inf is no mask.
    inf_mask = np.triu(np.full((8, 8), -np.inf, np.float32), 1)
    sd_inf = dict(llm, **{"attn.causal_mask": inf_mask})
    nuq.save(tmp_path / "inf.safetensors", sd_inf)
    out = nuq_cli("quantize", tmp_path / "inf.safetensors", "-o", tmp_path / "qi.safetensors", "--json")
    assert "attn.causal_mask" in json.loads(out)["kept"]
    np.testing.assert_array_equal(nuq.load(tmp_path / "qi.safetensors")["attn.causal_mask"], inf_mask)
    for nonfinite in ("error", "saturate"):
        with pytest.warns(UserWarning, match=r"masks kept as they are .*: attn.causal_mask"):
            kept = nuq.quantize_state_dict(sd_inf, nuq.design("sptq"), nonfinite=nonfinite)
        assert kept["attn.causal_mask"] is inf_mask
    with pytest.raises(ValueError, match="odd.weight"):
        nuq.quantize_state_dict(dict(llm, **{"odd.weight": -inf_mask}), nuq.design("sptq"))
    # Tensors with no values to look at are refused by name, as before the masks were looked for.
    with pytest.raises(ValueError, match="tensor 'm' is on PyTorch's meta device"):
        nuq.quantize_state_dict(dict(llm, m=torch.empty(4, 8, device="meta")), nuq.design("sptq"))
    with pytest.raises(TypeError, match="tensor 's' has PyTorch's torch.sparse_coo layout"):
        nuq.quantize_state_dict(dict(llm, s=torch.from_numpy(causal[0, 0]).to_sparse()), nuq.design("sptq"))


def test_tensors_that_set_every_others_scale_are_warned_of_as_the_cli_warns(nuq_cli, tmp_path, llm):
    """Mamba's A_log (log 1..16 beside weights of sigma 0.02) sets the global sigma: warned of under
    global normalisation, by quantize_state_dict as by the CLI, and not per tensor."""
    sd = dict(llm, **{"mixer.A_log": np.log(np.tile(np.arange(1, 17, dtype=np.float32), (8, 1)))})
    with pytest.warns(UserWarning, match=r"quantize_state_dict: with global normalisation 1 tensor\(s\) set every "
                      r"other's scale: 'mixer.A_log' \("):
        nuq.quantize_state_dict(sd, nuq.design("msptq"))
    nuq.save(tmp_path / "in.safetensors", sd)
    out = json.loads(nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", "--json"))
    assert [w.split(": ", 1)[1] for w in out["warnings"]] == \
        [str(w.message).split(": ", 1)[1] for w in warnings_of(lambda: nuq.quantize_state_dict(sd, nuq.design("msptq")))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nuq.quantize_state_dict(sd, nuq.design("msptq"), normalise="per-tensor")
        nuq.quantize_state_dict(llm, nuq.design("msptq"))


def warnings_of(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return caught


def test_vectors_and_biases_of_any_rank_are_kept_as_the_cli_keeps_them(nuq_cli, tmp_path, llm):
    """[1, 1, d] and [1, d] tensors (ViT's cls_token, a one-output head) and names ending in "bias"
    (gpt-oss's per-expert biases [E, 2I]) are kept as 1-D ones are, unless quantize_vectors."""
    rng = np.random.default_rng(3)
    extra = {"cls_token": rng.laplace(size=(1, 1, 32)).astype(np.float32),
             "score.weight": rng.laplace(size=(1, 32)).astype(np.float32),
             "mlp.experts.gate_up_proj_bias": rng.laplace(size=(4, 64)).astype(np.float32),
             "mlp.dt_bias_scale": rng.laplace(size=(4, 8)).astype(np.float32)}
    sd = dict(llm, **extra)
    nuq.save(tmp_path / "in.safetensors", sd)
    cli = set(json.loads(nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors",
                                 "--json"))["kept"])
    ours = nuq.quantize_state_dict(sd, nuq.design("msptq"), normalise="per-tensor")
    kept = {k for k, v in ours.items() if not isinstance(v, nuq.QuantizedTensor)}
    assert kept == cli and {"cls_token", "score.weight", "mlp.experts.gate_up_proj_bias"} <= kept
    assert "mlp.dt_bias_scale" not in kept
    every = nuq.quantize_state_dict(sd, nuq.design("msptq"), normalise="per-tensor", quantize_vectors=True)
    assert all(isinstance(v, nuq.QuantizedTensor) for v in every.values())


def test_skip_takes_globs_regular_expressions_and_generators(llm):
    codebook = nuq.design("sptq")
    quantized = lambda out: {k for k, v in out.items() if isinstance(v, nuq.QuantizedTensor)}
    regex = nuq.quantize_state_dict(llm, codebook, skip=re.compile("embed_tokens|lm_head"))
    assert quantized(regex) == {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"}
    globs = nuq.quantize_state_dict(llm, codebook, skip=(p for p in ["model.embed_tokens.*", "lm_head.*"]))
    assert quantized(globs) == quantized(regex)  # a generator is read once, for every name
    with pytest.warns(UserWarning, match=r"names no tensor \(a glob, matched against the whole name; pass re.compile"):
        nuq.quantize_state_dict(llm, codebook, skip="embed_tokens|lm_head")  # a glob that matches nothing
    with pytest.warns(UserWarning, match=r"'nomatch' names no tensor \(a regular expression, searched in each name\)"):
        nuq.quantize_state_dict(llm, codebook, skip=re.compile("nomatch"))
    with pytest.raises(TypeError, match="^quantize_state_dict: skip: 3 is neither a glob"):  # a wrong type
        nuq.quantize_state_dict(llm, codebook, skip=[3])
    with pytest.raises(TypeError, match=r"^quantize_state_dict: skip: 5; give None, a callable"):
        nuq.quantize_state_dict(llm, codebook, skip=5)


def test_quantized_tensors_and_nothing_to_quantize_are_refused_as_the_cli_refuses_them(llm, tmp_path, nuq_binary):
    import subprocess
    quantized = nuq.quantize_state_dict(llm, nuq.design("sptq"))
    with pytest.raises(ValueError, match=r"tensor '.*' is already quantized \(and \d+ more\); dequantize_state_dict"):
        nuq.quantize_state_dict(quantized, nuq.design("uniform", 4))
    again = nuq.quantize_state_dict(nuq.dequantize_state_dict(quantized), nuq.design("uniform", 4))
    assert {k for k, v in again.items() if isinstance(v, nuq.QuantizedTensor)} == \
        {k for k, v in quantized.items() if isinstance(v, nuq.QuantizedTensor)}
    norms = {k: v for k, v in llm.items() if len(np.shape(v)) < 2}
    assert norms
    for state_dict, options in ((norms, {}), (llm, {"skip": "*"}), ({}, {})):
        with pytest.raises(ValueError, match="no tensor to quantize"):
            nuq.quantize_state_dict(state_dict, nuq.design("sptq"), **options)
    nuq.save(tmp_path / "norms.safetensors", norms)  # the CLI says the same of such a checkpoint
    result = subprocess.run([nuq_binary, "quantize", str(tmp_path / "norms.safetensors"), "-o",
                             str(tmp_path / "q.safetensors")], capture_output=True, text=True)
    assert result.returncode == 1 and "no tensor to quantize" in result.stderr
    with pytest.raises(TypeError, match="a dict"):
        nuq.quantize_state_dict([1, 2], nuq.design("sptq"))


def test_a_name_the_codes_would_be_saved_by_is_refused_before_the_work(nuq_cli, tmp_path, rng):
    laplace = lambda *shape: rng.laplace(size=shape).astype(np.float32)
    clashes = [({"x.weight": laplace(16, 16), "x.weight.codes": laplace(16, 16)}, nuq.design("msptq"), None, "codes"),
               ({"x.weight": laplace(16, 16), "x.weight.scales": laplace(2)}, nuq.design("msptq"), 8, "scales"),
               ({"x.weight": laplace(16, 16), "x.weight.grid": laplace(2)}, nuq.design("uniform", 16), None, "grid"),
               ({"x.weight": laplace(16, 16), "x.weight.codebook": laplace(2)}, nuq.design("sptq"), None, "codebook")]
    for state_dict, codebook, group_size, part in clashes:
        with pytest.raises(ValueError, match=rf"tensor 'x.weight' cannot be stored: the state dict already has a "
                                             rf"'x.weight.{part}'"):
            nuq.quantize_state_dict(state_dict, codebook, group_size=group_size)
        nuq.save(tmp_path / "in.safetensors", state_dict)  # the CLI refuses the same checkpoint
        options = ["--method", codebook.method, "--bits", str(codebook.bits)] + \
            (["--group-size", str(group_size)] if group_size else [])
        with pytest.raises(AssertionError, match=rf"already has a 'x.weight.{part}'"):
            nuq_cli("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "q.safetensors", *options)
    # A name only another layout would take is free: without groups no .scales, at 16 bits no .codebook
    for state_dict, codebook, part in (({"x.weight": laplace(16, 16), "x.weight.scales": laplace(2)},
                                        nuq.design("msptq"), "scales"),
                                       ({"x.weight": laplace(16, 16), "x.weight.codebook": laplace(2)},
                                        nuq.design("uniform", 16), "codebook")):
        quantized = nuq.quantize_state_dict(state_dict, codebook)
        nuq.save(tmp_path / "ok.safetensors", quantized)
        np.testing.assert_array_equal(nuq.load(tmp_path / "ok.safetensors")[f"x.weight.{part}"], state_dict[f"x.weight.{part}"])


def test_scalars_stay_scalars_through_torch_and_float8(tmp_path, rng):
    # BatchNorm's num_batches_tracked, GPT-2's masked_bias, a per-tensor FP8 scale: stored [], loaded ()
    torch = pytest.importorskip("torch")
    write(tmp_path / "s.safetensors", {
        "w.weight": ("F32", [16, 16], rng.laplace(size=(16, 16)).astype(np.float32).tobytes()),
        "bn.num_batches_tracked": ("I64", [], np.int64(7).tobytes()),
        "attn.masked_bias": ("F32", [], np.float32(-1e4).tobytes()),
        "fp8.input_scale": ("F8_E4M3", [], bytes([0x38]))})
    loaded = nuq.load(tmp_path / "s.safetensors")
    assert nuq.to_float32(loaded["fp8.input_scale"]).shape == () and nuq.to_float32(loaded["fp8.input_scale"]) == 1.0
    for written in (loaded, nuq.quantize_state_dict(loaded, nuq.design("sptq"))):  # saved back as it was read
        nuq.save(tmp_path / "back.safetensors", written)
        back = nuq.load(tmp_path / "back.safetensors")["fp8.input_scale"]
        assert back.shape == () and back.tobytes() == bytes([0x38])
    restored = nuq.dequantize_state_dict(nuq.quantize_state_dict(loaded, nuq.design("sptq")), as_torch=True)
    assert restored["bn.num_batches_tracked"].shape == () and restored["bn.num_batches_tracked"].item() == 7
    assert restored["attn.masked_bias"].shape == () and restored["attn.masked_bias"].item() == -1e4
    assert restored["fp8.input_scale"].shape == () and restored["fp8.input_scale"].dtype == torch.float32
    nuq.save(tmp_path / "again.safetensors", restored)
    assert nuq.load(tmp_path / "again.safetensors")["bn.num_batches_tracked"].shape == ()


def test_modules_another_tool_quantized_are_kept_whole(rng):
    scales = rng.random((2, 2)).astype(np.float32)
    sd = {"mlp.down_proj.weight": rng.integers(0, 255, (16, 16), dtype=np.uint8),  # FP8 bytes
          "mlp.down_proj.weight_scale_inv": scales,
          "attn.o_proj.qweight": rng.integers(-9, 9, (4, 16), dtype=np.int32),
          "attn.o_proj.scales": rng.random((1, 16)).astype(np.float16),
          "attn.q_proj.weight": rng.laplace(size=(16, 16)).astype(np.float32)}
    out = nuq.quantize_state_dict(sd, nuq.design("msptq"))
    assert [k for k, v in out.items() if isinstance(v, nuq.QuantizedTensor)] == ["attn.q_proj.weight"]
    assert out["mlp.down_proj.weight_scale_inv"] is scales


def write(path, tensors):
    """A safetensors file from {name: (dtype, shape, raw bytes)}, as a peer writes it."""
    header, blob = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob)


def test_peer_dtypes_are_read_and_names_like_nuqs_parts_survive(nuq_cli, tmp_path, rng):
    w = rng.laplace(size=(24, 16)).astype(np.float32)
    # E4M3: 0x38 = 1.0, 0xC0 = -2.0, 0x7E = 448 (largest), 0x01 = 2^-9; E8M0: 0x7F = 1, 0x80 = 2
    write(tmp_path / "peer.safetensors", {
        "proj.weight": ("F32", [24, 16], w.tobytes()),
        "fp8.weight": ("F8_E4M3", [2, 2], bytes([0x38, 0xC0, 0x7E, 0x01])),
        "fp8.weight_scale": ("F8_E8M0", [2], bytes([0x7F, 0x80])),
        "mx.blocks": ("F4", [2, 4], bytes([0x12, 0x34, 0x56, 0x78])),
        "gptq.qweight": ("I32", [1, 4], np.arange(4, dtype=np.int32).tobytes()),
        "gptq.scales": ("F16", [1, 4], np.arange(4, dtype=np.float16).tobytes()),  # kept with its qweight
        "aqlm.codes": ("I16", [2, 2], np.array([1, -2, 3, -4], dtype=np.int16).tobytes()),
        "rope.freqs": ("C64", [2], np.array([1 + 2j, -3j], dtype=np.complex64).tobytes())})
    nuq_cli("quantize", tmp_path / "peer.safetensors", "-o", tmp_path / "q.safetensors", "--device", "cpu")
    for path in ("peer.safetensors", "q.safetensors"):
        back = nuq.load(tmp_path / path)
        assert back["fp8.weight"].dtype.metadata["safetensors"] == "F8_E4M3"  # its bytes, tagged
        assert back["fp8.weight"].tolist() == [[0x38, 0xC0], [0x7E, 0x01]]
        np.testing.assert_array_equal(nuq.to_float32(back["fp8.weight"]), np.array([[1.0, -2.0], [448.0, 2.0**-9]], np.float32))
        np.testing.assert_array_equal(nuq.to_float32(back["fp8.weight_scale"]), np.array([1.0, 2.0], np.float32))
        assert back["mx.blocks"].dtype == np.uint8 and back["mx.blocks"].tolist() == [[0x12, 0x34], [0x56, 0x78]]
        assert back["mx.blocks"].dtype.metadata == {"safetensors": "F4", "shape": [2, 4]}
        np.testing.assert_array_equal(back["gptq.scales"], np.arange(4, dtype=np.float16).reshape(1, 4))
        np.testing.assert_array_equal(back["aqlm.codes"], np.array([[1, -2], [3, -4]], np.int16))
        np.testing.assert_array_equal(back["rope.freqs"], np.array([1 + 2j, -3j], np.complex64))
    assert isinstance(nuq.load(tmp_path / "q.safetensors")["proj.weight"], nuq.QuantizedTensor)
    with pytest.raises(ValueError, match="not the bytes of an 8-bit float"):
        nuq.to_float32(np.zeros(3, np.uint8))
    # In Python as in the CLI: the peer's tensors and the scales of its modules are kept, and saved
    # back in their own dtypes and shapes, byte for byte.
    loaded = nuq.load(tmp_path / "peer.safetensors")
    ours = nuq.quantize_state_dict(loaded, nuq.design("msptq"))
    assert [k for k, v in ours.items() if isinstance(v, nuq.QuantizedTensor)] == ["proj.weight"]
    nuq.save(tmp_path / "again.safetensors", ours)
    nuq_cli("quantize", tmp_path / "peer.safetensors", "-o", tmp_path / "cli.safetensors", "-m", "msptq", "--device", "cpu")
    _, _, ours_raw = nuq_format.read(tmp_path / "again.safetensors")
    _, cli_metadata, cli_raw = nuq_format.read(tmp_path / "cli.safetensors")
    header = lambda p: json.loads((p).read_bytes()[8:8 + struct.unpack("<Q", p.read_bytes()[:8])[0]])
    for name in ("fp8.weight", "fp8.weight_scale", "mx.blocks", "gptq.scales", "aqlm.codes", "rope.freqs"):
        assert header(tmp_path / "again.safetensors")[name]["dtype"] == header(tmp_path / "peer.safetensors")[name]["dtype"]
        assert header(tmp_path / "again.safetensors")[name]["shape"] == header(tmp_path / "peer.safetensors")[name]["shape"]
        assert ours_raw[name].tobytes() == cli_raw[name].tobytes(), name
    np.testing.assert_array_equal(ours_raw["proj.weight.codes"], cli_raw["proj.weight.codes"])
    # nuq.save of plain tensors named like a quantized tensor's parts: they load back as they were
    q = nuq.quantize(w, nuq.design("msptq"))
    nuq.save(tmp_path / "mixed.safetensors", {"w": q, "attn.scales": np.ones(4, np.float32),
                                               "x.codes": np.arange(3, dtype=np.int16)})
    back = nuq.load(tmp_path / "mixed.safetensors")
    np.testing.assert_array_equal(back["attn.scales"], np.ones(4, np.float32))
    np.testing.assert_array_equal(back["x.codes"], np.arange(3, dtype=np.int16))
    np.testing.assert_array_equal(back["w"].codes, q.codes)
    nuq_cli("dequantize", tmp_path / "mixed.safetensors", "-o", tmp_path / "mixed-d.safetensors")
    np.testing.assert_array_equal(nuq.load(tmp_path / "mixed-d.safetensors")["x.codes"], np.arange(3, dtype=np.int16))


def test_metadata_survives_load_and_save(tmp_path, rng):
    q = nuq.quantize(rng.laplace(size=(8, 8)).astype(np.float32), nuq.design("sptq"))
    nuq.save(tmp_path / "a.safetensors", {"fc1.weight": q}, metadata={"nuq.architecture": "mlp", "source": "x"})
    metadata = nuq.load_metadata(tmp_path / "a.safetensors")
    assert metadata["nuq.architecture"] == "mlp" and metadata["source"] == "x" and "nuq.quantized" not in metadata
    nuq.save(tmp_path / "b.safetensors", nuq.load(tmp_path / "a.safetensors"), metadata=metadata)
    assert nuq.load_metadata(tmp_path / "b.safetensors") == metadata
    with pytest.raises(ValueError, match="nuq's own description"):
        nuq.save(tmp_path / "c.safetensors", {"w": q}, metadata={"nuq.quantized": "{}"})


def test_qgemm_of_an_empty_sum_is_the_bias(rng):
    codebook = nuq.design("msptq")
    empty = {"e": np.zeros((4, 0), np.float32), "f": np.zeros((0, 4), np.float32)}
    kept = nuq.quantize_state_dict({"w": rng.laplace(size=(8, 8)).astype(np.float32), **empty}, codebook)
    assert kept["e"] is empty["e"] and kept["f"] is empty["f"]  # as nuq quantize: nothing to quantize
    # Empty QuantizedTensors (files of older nuq held them), beside one with weights to normalise by
    named = [("w", rng.laplace(size=(8, 8)).astype(np.float32), None)] + [(k, v, None) for k, v in empty.items()]
    out = dict(zip(("w", "e", "f"), nuq._nuq._quantize(named, codebook, None, None, "cpu", "error")))
    bias = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(nuq.qgemm(np.zeros((2, 0), np.float32), out["e"], bias), np.tile(bias, (2, 1)))
    np.testing.assert_array_equal(nuq.qgemm(np.zeros((3, 0), np.float32), out["e"]), np.zeros((3, 4), np.float32))
    assert nuq.qgemm(np.ones((2, 4), np.float32), out["f"]).shape == (2, 0)
    with pytest.raises(TypeError, match="must be a QuantizedTensor"):
        nuq.qgemm(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32))


def test_unaligned_and_byte_swapped_arrays_are_read_as_their_values(rng):
    w = rng.laplace(size=(6, 10)).astype(np.float32)
    codebook = nuq.design("sptq")
    unaligned = np.frombuffer(b"\0" + w.tobytes(), dtype=np.float32, count=w.size, offset=1).reshape(w.shape)
    assert not unaligned.flags.aligned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for other in (unaligned, w.astype(">f4")):
            np.testing.assert_array_equal(nuq.quantize(other, codebook).codes, nuq.quantize(w, codebook).codes)
    # A state dict's big-endian floats are quantized (or, float64, kept) as native ones of their values;
    # a big-endian float64 array is quantized as its float32 rounding, as a native one.
    out = nuq.quantize_state_dict({"w": w, "v": w.astype(">f4"), "h": w.astype(">f2")}, codebook)
    native = nuq.quantize_state_dict({"w": w, "v": w, "h": w.astype(np.float16)}, codebook)
    for name in ("w", "v", "h"):
        np.testing.assert_array_equal(out[name].codes, native[name].codes)
    with pytest.warns(UserWarning, match="float64 tensors kept as they are: d"):
        assert nuq.quantize_state_dict({"w": w, "d": w.astype(">f8")}, codebook)["d"].dtype == ">f8"
    np.testing.assert_array_equal(nuq.quantize(w.astype(">f8"), codebook).codes, nuq.quantize(w, codebook).codes)
    # ... and restored as torch tensors of their values.
    torch = pytest.importorskip("torch")
    restored = nuq.dequantize_state_dict({"i": np.arange(3, dtype=">i4"), "b": w.astype(">f4")}, as_torch=True)
    assert restored["i"].tolist() == [0, 1, 2]
    torch.testing.assert_close(restored["b"], torch.from_numpy(w), rtol=0, atol=0)
