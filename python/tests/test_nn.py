"""nuq.nn: a PyTorch model's Linear and Conv2d layers swapped for layers that multiply by packed
codes. Each is checked against the same model with its weights dequantized into torch's own layers
(torch's forward pass as the reference), and the codes against quantize_state_dict's and nuq
quantize's."""

import copy
import importlib
import io
import json
import re
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nuq  # noqa: E402
import nuq.nn  # noqa: E402


def small_cnn(seed=1):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, (2, 4), padding=1), torch.nn.ReLU(),  # rows of 24: groups of 8
        torch.nn.Conv2d(8, 6, (2, 3), stride=2, padding="valid", bias=False), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 5 * 4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def images(n=5, seed=2):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, 9, 10)).astype(np.float32))


def float_twin(model, state):
    """`model`'s architecture with the quantized state dict's weights dequantized into torch's layers."""
    twin = copy.deepcopy(model)
    twin.load_state_dict({k: torch.as_tensor(v) for k, v in nuq.dequantize_state_dict(state).items()})
    return twin


def close(a, b):
    """Two float32 sums of the same products in other orders."""
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("options", [{}, {"normalise": "per-channel"}, {"normalise": "per-tensor"},
                                     {"group_size": 8}])
def test_swapped_layers_multiply_as_their_dequantized_weights(options):
    model, x = small_cnn(), images()
    codebook = nuq.design("msptq")
    state = nuq.quantize_state_dict(model.state_dict(), codebook, **options)
    twin = float_twin(model, state)
    swapped = nuq.nn.quantize_modules(model, codebook, **options)
    assert list(swapped) == ["0", "2", "5", "7"]
    assert isinstance(model[0], nuq.nn.QuantizedConv2d) and isinstance(model[7], nuq.nn.QuantizedLinear)
    for name, q in swapped.items():  # the codes quantize_state_dict gives the same weights
        np.testing.assert_array_equal(q.codes, state[f"{name}.weight"].codes)
        assert model.get_submodule(name).weight is q
    assert [n for n, _ in model.named_parameters()] == ["0.bias", "5.bias", "7.bias"]  # no float weight left
    with torch.no_grad():
        y, reference = model(x), twin(x)
    assert y.shape == (5, 10) and close(y, reference)
    assert not torch.equal(reference, small_cnn()(x))  # the two-bit model is not the float one


@pytest.mark.parametrize("geometry", [
    {"kernel_size": 3, "padding": "same"},
    {"kernel_size": (2, 4), "padding": "same", "dilation": (1, 3)},  # odd total padding: the extra at the end
    {"kernel_size": 3, "stride": (2, 1), "padding": (0, 2), "dilation": 2},
    {"kernel_size": 1, "padding": "valid", "bias": False},
    {"kernel_size": (5, 3), "stride": 3, "padding": 1},
])
@pytest.mark.parametrize("batched", [True, False])
def test_convolutions_of_every_geometry_match_torch(geometry, batched):
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 7, **geometry))
    codebook = nuq.design("lloyd-max", 4)
    state = nuq.quantize_state_dict(model.state_dict(), codebook, normalise="per-channel")
    twin = float_twin(model, state)
    nuq.nn.quantize_modules(model, codebook, normalise="per-channel")
    x = images(2, seed=6)
    x = x if batched else x[0]
    with torch.no_grad():
        y, reference = model(x), twin(x)
    assert y.shape == reference.shape and close(y, reference)


def test_inputs_of_any_leading_shape_and_dtype_come_back_as_they_went_in():
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(24, 16))
    codebook = nuq.design("msptq")
    twin = float_twin(model, nuq.quantize_state_dict(model.state_dict(), codebook))
    nuq.nn.quantize_modules(model, codebook)
    x = torch.randn(3, 4, 24)
    with torch.no_grad():
        assert model(x).shape == (3, 4, 16) and close(model(x), twin(x))
        for dtype in (torch.float16, torch.bfloat16, torch.float64):
            y = model(x.to(dtype))
            assert y.dtype == dtype
            assert torch.equal(y, model(x.to(dtype).float()).to(dtype))  # the product of the input's values
    with pytest.raises(ValueError, match=r"input of shape \(3, 4, 23\); its last dimension must be the layer's 24"):
        model(x[..., :23])
    with pytest.raises(TypeError, match="input of dtype torch.int64"):
        model(torch.ones(2, 24, dtype=torch.int64))


def test_gradients_reach_the_inputs_and_biases_not_the_codes():
    model, x = small_cnn(), images()
    codebook = nuq.design("msptq")
    twin = float_twin(model, nuq.quantize_state_dict(model.state_dict(), codebook))
    nuq.nn.quantize_modules(model, codebook)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    (model(x1) ** 2).sum().backward()
    (twin(x2) ** 2).sum().backward()
    assert close(x1.grad, x2.grad)
    for name in ("0", "5", "7"):
        assert close(model.get_submodule(name).bias.grad, twin.get_submodule(name).bias.grad)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)  # the biases train, the codes stay
    codes = model[7].weight.codes.copy()
    before = model[7].bias.detach().clone()
    optimiser.step()
    assert not torch.equal(model[7].bias, before) and np.array_equal(model[7].weight.codes, codes)


def test_a_quantized_model_saves_and_loads_as_nuq_files(tmp_path, nuq_cli):
    model, x = small_cnn(), images()
    codebook = nuq.design("msptq")
    float_path = tmp_path / "float.safetensors"
    nuq.save(float_path, {k: v for k, v in model.state_dict().items()})
    nuq.nn.quantize_modules(model, codebook)
    with torch.no_grad():
        y = model(x)
    state = model.state_dict()
    assert isinstance(state["0.weight"], nuq.QuantizedTensor) and isinstance(state["0.bias"], torch.Tensor)
    path = tmp_path / "model.safetensors"
    nuq.save(path, state)
    told = nuq_cli("inspect", path)
    assert "design: msptq" in told and "4 tensor(s) quantized" in told and "3 kept as they were" in told
    fresh = small_cnn(seed=9)
    nuq.nn.load_quantized(fresh, nuq.load(path))
    assert isinstance(fresh[2], nuq.nn.QuantizedConv2d) and isinstance(fresh[5], nuq.nn.QuantizedLinear)
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
    # The float checkpoint through nuq quantize: the same codes, the same outputs.
    cli_path = tmp_path / "cli.safetensors"
    nuq_cli("quantize", float_path, "-o", cli_path, "--method", "msptq")
    from_cli = small_cnn(seed=9)
    nuq.nn.load_quantized(from_cli, nuq.load(cli_path))
    with torch.no_grad():
        assert torch.equal(from_cli(x), y)
    # A second load into already quantized layers replaces their codes.
    nuq.nn.load_quantized(fresh, nuq.load(cli_path))
    np.testing.assert_array_equal(fresh[0].weight.codes, state["0.weight"].codes)


def test_pickles_and_deep_copies_keep_the_codes():
    model, x = small_cnn(), images()
    nuq.nn.quantize_modules(model, nuq.design("msptq"), group_size=8)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    try:
        restored = torch.load(buffer, weights_only=False)
    except TypeError:  # PyTorch before 1.13.1 has no weights_only
        buffer.seek(0)
        restored = torch.load(buffer)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(restored(x), y) and torch.equal(copy.deepcopy(model)(x), y)


def test_tied_weights_are_quantized_once_and_shared():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16, bias=False), torch.nn.Tanh(), torch.nn.Linear(16, 16))
    model[2].weight = model[0].weight
    other = torch.nn.Sequential(torch.nn.Linear(16, 16, bias=False))
    other[0].weight = torch.nn.Parameter(model[0].weight.detach().clone())
    codebook = nuq.design("msptq")
    swapped = nuq.nn.quantize_modules(model, codebook)
    assert swapped["0"] is swapped["2"]  # one QuantizedTensor, its statistics counted once
    np.testing.assert_array_equal(swapped["0"].codes, nuq.nn.quantize_modules(other, codebook)["0"].codes)


def test_layers_it_cannot_swap_are_left_and_named():
    torch.manual_seed(2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)  # reads out_proj.weight itself
            self.depthwise = torch.nn.Conv2d(4, 4, 3, groups=4)
            self.reflect = torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
            self.tiny = torch.nn.Linear(1, 16)  # a weight of one dimension above 1: kept, as nuq quantize keeps it
            self.head = torch.nn.Linear(16, 4)
            self.embed = torch.nn.Linear(16, 16)

        def forward(self, x):
            return self.head(self.embed(self.attention(x, x, x)[0]) + self.tiny(x[..., :1]))

    model = Net()
    x = torch.randn(2, 5, 16)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        swapped = nuq.nn.quantize_modules(model, nuq.design("msptq"), skip="embed.*")
    text = " ".join(str(w.message) for w in said)
    assert "attention.out_proj (a NonDynamicallyQuantizableLinear" in text
    assert "depthwise (a convolution of 4 groups)" in text and "reflect (reflect padding)" in text
    assert sorted(swapped) == ["head"]  # embed skipped, tiny kept, attention's own layer left
    assert type(model.embed) is torch.nn.Linear and type(model.tiny) is torch.nn.Linear
    with torch.no_grad():
        assert model(x).shape == (2, 5, 4)  # the attention still runs on its float weights


def test_layers_whose_weight_a_hook_makes_are_left_with_their_hooks():
    """weight_norm and spectral_norm make a layer's weight from parameters of their own in a forward
    pre-hook: after load_state_dict (no forward pass since) the weight in hand is out of date, and a
    swap would drop the hook and its parameters. They are left, as is a layer with a user's hook,
    and named; so is a layer without elements, which no option quantizes."""
    torch.manual_seed(3)

    def make():
        return torch.nn.Sequential(torch.nn.utils.weight_norm(torch.nn.Linear(16, 16)), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 16), torch.nn.Linear(16, 8), torch.nn.Linear(0, 4))

    trained = make()
    with torch.no_grad():
        trained[0].weight_g.mul_(10)
        trained[0].weight_v.normal_()
    for quantize_vectors in (False, True):
        model = make()
        model.load_state_dict(trained.state_dict())
        calls = []
        model[3].register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            swapped = nuq.nn.quantize_modules(model, nuq.design("uniform", 8), normalise="per-channel",
                                              quantize_vectors=quantize_vectors)
        text = " ".join(str(w.message) for w in said)
        assert "0 (a weight made before each forward pass (weight_norm, spectral_norm), not a parameter)" in text
        assert "3 (hooks on its forward pass, which the quantized layer would not run)" in text
        assert "4 (a weight of shape (4, 0), without elements)" in text and "quantize_vectors=True" not in text
        assert list(swapped) == ["2"]
    x = torch.randn(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(model[0](x), trained[0](x), rtol=0, atol=0)  # the trained weight, made again
        model[:4](x)  # the hooked layer still runs its hook
    assert calls == [torch.Size([4, 8])]
    convolutions = torch.nn.Sequential(torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 4, 3)), torch.nn.Conv2d(4, 4, 3))
    with pytest.warns(UserWarning, match=r"left as they are: 0 \(a weight made before each forward pass"):
        assert list(nuq.nn.quantize_modules(convolutions, nuq.design("msptq"))) == ["1"]


def test_nuq_nn_is_there_without_its_own_import():
    code = "import nuq, sys; assert 'torch' not in sys.modules; m = nuq.nn; assert 'torch' in sys.modules; print(m.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "nuq.nn", result.stderr
    assert importlib.import_module("nuq").nn is nuq.nn
    with pytest.raises(AttributeError, match="module 'nuq' has no attribute 'nope'"):
        nuq.nope


def test_mistakes_are_told_in_python_terms(tmp_path):
    codebook = nuq.design("msptq")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, not dict"):
        nuq.nn.quantize_modules({}, codebook)
    with pytest.raises(ValueError, match="has no torch.nn.Linear or torch.nn.Conv2d layer"):
        nuq.nn.quantize_modules(torch.nn.Sequential(torch.nn.ReLU()), codebook)
    with pytest.raises(ValueError, match="the model is itself a Linear or Conv2d layer"):
        nuq.nn.quantize_modules(torch.nn.Linear(8, 8), codebook)
    with pytest.raises(ValueError, match=r"^quantize_modules: no tensor to quantize"):
        nuq.nn.quantize_modules(torch.nn.Sequential(torch.nn.Linear(8, 8)), codebook, skip="*")
    with pytest.warns(UserWarning, match=r"^quantize_modules: skip pattern 'nothing\*' names no tensor"):
        nuq.nn.quantize_modules(torch.nn.Sequential(torch.nn.Linear(8, 8)), codebook, skip="nothing*")
    q = nuq.quantize(np.random.default_rng(1).laplace(size=(4, 8)).astype(np.float32), codebook)
    with pytest.raises(ValueError, match=r"bias of shape \(3,\), not the weights' 4 outputs"):
        nuq.nn.QuantizedLinear(q, torch.zeros(3))
    with pytest.raises(ValueError, match="a QuantizedConv2d takes a 4-dimensional one"):
        nuq.nn.QuantizedConv2d(q)
    with pytest.raises(TypeError, match="weight must be a nuq.QuantizedTensor"):
        nuq.nn.QuantizedLinear(torch.zeros(4, 8))
    layer = nuq.nn.QuantizedLinear(q, np.arange(4.0))
    assert layer.bias.dtype == torch.float32 and layer(torch.ones(8)).shape == (4,)
    wrapped = torch.nn.Sequential(layer)
    with pytest.raises(RuntimeError, match=re.escape("0.weight: a QuantizedLinear holds packed codes, and the state "
                                                     "dict has a Tensor")):
        wrapped.load_state_dict({"0.weight": torch.zeros(4, 8), "0.bias": torch.zeros(4)})
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "lin.weight"'):  # as torch's own
        nuq.nn.load_quantized(torch.nn.Sequential(torch.nn.Linear(8, 4)), {"lin.weight": q})
    model = torch.nn.Sequential(torch.nn.Linear(9, 4), torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"'0.weight': codes of shape \(4, 8\), the layer's weight is \(4, 9\)"):
        nuq.nn.load_quantized(model, {"1.weight": nuq.quantize(torch.randn(4, 4), codebook), "0.weight": q})
    assert [type(m) for m in model] == [torch.nn.Linear, torch.nn.Linear]  # nothing swapped before the refusal
    with pytest.raises(ValueError, match="QuantizedLinear: device 'gpu'; 'auto', 'cpu' or 'cuda'"):
        nuq.nn.QuantizedLinear(q, device="gpu")
    grouped = nuq.quantize(np.random.default_rng(2).laplace(size=(4, 16)).astype(np.float32), codebook, group_size=8)
    with pytest.raises(ValueError, match=r"grouped codes \(group_size 8\) are multiplied on the CPU"):
        nuq.nn.QuantizedLinear(grouped, device="cuda")
    conv = nuq.quantize(np.random.default_rng(3).laplace(size=(2, 3, 3, 3)).astype(np.float32), codebook)
    with pytest.raises(ValueError, match=r"stride \(2,\); an int or two ints"):
        nuq.nn.QuantizedConv2d(conv, stride=(2,))
    with pytest.raises(ValueError, match=r"input of shape \(3, 2, 2\) is smaller than the 3x3 kernel"):
        nuq.nn.QuantizedConv2d(conv)(torch.ones(3, 2, 2))


def test_a_transformer_in_inference_takes_the_swapped_layers():
    """TransformerEncoderLayer's fast path (eval, no grad) reads linear1.weight itself: a
    QuantizedTensor's __torch_function__ turns it away, to the forward passes nuq.nn replaced."""
    torch.manual_seed(0)
    model = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2).eval()
    codebook = nuq.design("msptq")
    feed_forward = {k: v for k, v in model.state_dict().items() if k.endswith(("linear1.weight", "linear2.weight"))}
    twin = copy.deepcopy(model)
    twin.load_state_dict({**twin.state_dict(), **{k: torch.as_tensor(v) for k, v in
                                                  nuq.dequantize_state_dict(nuq.quantize_state_dict(feed_forward,
                                                                                                    codebook)).items()}})
    with pytest.warns(UserWarning, match="layers.0.self_attn.out_proj"):
        swapped = nuq.nn.quantize_modules(model, codebook)
    assert sorted(swapped) == ["layers.0.linear1", "layers.0.linear2", "layers.1.linear1", "layers.1.linear2"]
    x = torch.from_numpy(np.random.default_rng(8).standard_normal((3, 7, 32)).astype(np.float32))
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 5:] = True
    with torch.no_grad():
        for mask in (None, padding):
            y, reference = model(x, src_key_padding_mask=mask), twin(x, src_key_padding_mask=mask)
            real = torch.ones(3, 7, dtype=torch.bool) if mask is None else ~mask  # the fast path zeroes the padding
            assert close(y[real], reference[real])
    with pytest.raises(TypeError, match="matmul: a nuq.QuantizedTensor holds packed codes, not a tensor"):
        torch.matmul(x, swapped["layers.0.linear1"])


def test_a_layer_under_several_names_is_one_layer_swapped_under_each():
    """ALBERT-style sharing: the same module registered three times stays one module, quantized."""
    torch.manual_seed(6)
    block = torch.nn.Linear(16, 16)
    model = torch.nn.Sequential(block, torch.nn.Tanh(), block, torch.nn.Tanh(), block)
    x = torch.randn(3, 16)
    swapped = nuq.nn.quantize_modules(model, nuq.design("msptq"))
    assert sorted(swapped) == ["0", "2", "4"] and model[0] is model[2] is model[4]
    assert isinstance(model[4], nuq.nn.QuantizedLinear)
    fresh_block = torch.nn.Linear(16, 16)
    fresh = torch.nn.Sequential(fresh_block, torch.nn.Tanh(), fresh_block, torch.nn.Tanh(), fresh_block)
    nuq.nn.load_quantized(fresh, model.state_dict())
    assert fresh[0] is fresh[2] is fresh[4] and isinstance(fresh[0], nuq.nn.QuantizedLinear)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_nuq_quantize_output_with_other_parameters_quantized_loads(tmp_path, nuq_cli):
    """nuq quantize also quantizes an embedding (and biases with --quantize-vectors): those codes go
    into the float parameters dequantized, with a warning; the Linear layers get theirs."""
    torch.manual_seed(7)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 16)
            self.proj = torch.nn.Linear(16, 32)
            self.head = torch.nn.Linear(32, 8)

        def forward(self, tokens):
            return self.head(torch.relu(self.proj(self.embed(tokens))))

    model = Net()
    nuq.save(tmp_path / "float.safetensors", model.state_dict())
    nuq_cli("quantize", tmp_path / "float.safetensors", "-o", tmp_path / "q.safetensors", "--quantize-vectors")
    loaded = nuq.load(tmp_path / "q.safetensors")
    assert all(isinstance(v, nuq.QuantizedTensor) for v in loaded.values())
    twin = Net()
    twin.load_state_dict(nuq.dequantize_state_dict(loaded, as_torch=True))
    with pytest.warns(UserWarning, match=r"codes loaded dequantized into float parameters .*: embed.weight "
                                         r"\(Embedding\), head.bias \(Linear\), proj.bias \(Linear\)"):
        nuq.nn.load_quantized(model, loaded)
    assert isinstance(model.proj, nuq.nn.QuantizedLinear) and isinstance(model.embed, torch.nn.Embedding)
    tokens = torch.tensor([[1, 5, 9], [49, 0, 3]])
    with torch.no_grad():
        assert close(model(tokens), twin(tokens))


def test_load_quantized_reads_8_bit_floats_as_their_values(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
    nuq.nn.quantize_modules(model, nuq.design("msptq"))
    state = {k: v for k, v in model.state_dict().items()}
    path = tmp_path / "m.safetensors"
    nuq.save(path, state)
    loaded = nuq.load(path)
    header = json.dumps({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "f8.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes([0x38, 0x40, 0xB8, 0x30]))
    loaded["1.weight"] = nuq.load(tmp_path / "f8.safetensors")["w"]  # 1, 2, -1, 0.5 in F8_E4M3, as bytes
    assert loaded["1.weight"].dtype == np.uint8
    np.testing.assert_array_equal(nuq.to_float32(loaded["1.weight"]), [1, 2, -1, 0.5])
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
    nuq.nn.load_quantized(fresh, loaded)
    assert fresh[1].weight.tolist() == [1.0, 2.0, -1.0, 0.5]


def test_what_quantize_state_dict_says_is_said_of_quantize_modules_even_when_it_fails():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)).double()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="^quantize_modules: no tensor to quantize"):
            nuq.nn.quantize_modules(model, nuq.design("msptq"))
    assert len(said) == 1 and str(said[0].message).startswith("quantize_modules: float64 tensors kept as they are: "
                                                              "0.weight (")
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
    with pytest.warns(UserWarning, match=r"left as they are: 1 \(a weight of shape \(1, 8\), one dimension above 1"):
        assert list(nuq.nn.quantize_modules(model, nuq.design("msptq"))) == ["0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what skip names is left without a word
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
        assert list(nuq.nn.quantize_modules(model, nuq.design("msptq"), skip="1.*")) == ["0"]


def test_auto_multiplies_where_the_input_lies(monkeypatch):
    """A CPU model stays on the CPU on a machine with a GPU: qgemm's own "auto" would take a host
    input to device 0."""
    asked = []
    real = nuq.nn.qgemm
    monkeypatch.setattr(nuq.nn, "qgemm", lambda x, q, bias, device: asked.append(device) or real(x, q, bias,
                                                                                                  device=device))
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    nuq.nn.quantize_modules(model, nuq.design("msptq"))
    model(torch.ones(2, 8))
    assert asked == ["cpu"]


def test_codes_given_to_torch_itself_are_refused_in_its_own_error():
    """load_state_dict of codes into a float model: PyTorch's error, with nuq's reason in it."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 16))
    state = nuq.quantize_state_dict(model.state_dict(), nuq.design("msptq"))
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"(?s)While copying the parameter named \"0.weight\".*a "
                                               r"nuq.QuantizedTensor holds packed codes, not a tensor"):
            torch.nn.Sequential(torch.nn.Linear(16, 16)).load_state_dict(state, strict=strict)
    assert state["0.weight"].size() == torch.Size([16, 16]) and state["0.weight"].size(1) == 16


def test_load_quantized_refuses_without_swapping_and_puts_layers_back(tmp_path, nuq_cli):
    torch.manual_seed(9)

    def attention():  # "q" is a prefix of "qkv": each bias must go to its own layer
        return torch.nn.ModuleDict({"q": torch.nn.Linear(8, 8), "qkv": torch.nn.Linear(8, 24)})

    nuq.save(tmp_path / "f.safetensors", attention().state_dict())
    nuq_cli("quantize", tmp_path / "f.safetensors", "-o", tmp_path / "q.safetensors", "--quantize-vectors")
    loaded = nuq.load(tmp_path / "q.safetensors")
    model = attention()
    with pytest.warns(UserWarning, match=r"q.bias \(Linear\), qkv.bias \(Linear\)"):
        nuq.nn.load_quantized(model, loaded)
    with pytest.warns(UserWarning, match="q.bias"):
        nuq.nn.load_quantized(model, loaded)  # again, into layers already quantized
    np.testing.assert_array_equal(model["qkv"].bias.detach().numpy(), loaded["qkv.bias"].dequantize())
    # A layer under two names with other codes under each: refused, nothing swapped.
    block = torch.nn.Linear(8, 8)
    shared = torch.nn.ModuleDict({"a": block, "b": block})
    codebook = nuq.design("msptq")
    other = {"a.weight": nuq.quantize(torch.randn(8, 8), codebook), "b.weight": nuq.quantize(torch.randn(8, 8), codebook),
             "a.bias": torch.zeros(8), "b.bias": torch.zeros(8)}
    with pytest.raises(ValueError, match="'b.weight' and 'a.weight' name one layer of the model"):
        nuq.nn.load_quantized(shared, other)
    assert shared["a"] is block and shared["b"] is block
    # load_state_dict's own refusal (a missing bias): the float layers are put back.
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    layers = list(model)
    state = nuq.quantize_state_dict(model.state_dict(), codebook)
    del state["1.bias"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "1.bias"'):
        nuq.nn.load_quantized(model, state)
    assert list(model) == layers


def test_skip_names_a_tied_weight_by_any_of_its_layers():
    torch.manual_seed(10)
    model = torch.nn.ModuleDict({"enc": torch.nn.Linear(16, 16), "dec": torch.nn.Linear(16, 16),
                                 "other": torch.nn.Linear(16, 16)})
    model["dec"].weight = model["enc"].weight
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'dec.*' names a tensor: no "names no tensor" warning
        swapped = nuq.nn.quantize_modules(model, nuq.design("msptq"), skip="dec.*")
    assert list(swapped) == ["other"] and type(model["enc"]) is torch.nn.Linear  # tied: left under both names
    with pytest.warns(UserWarning, match=r"^quantize_modules: skip pattern 'nothing\*' names no tensor"):
        nuq.nn.quantize_modules(torch.nn.Sequential(torch.nn.Linear(8, 8)), nuq.design("msptq"), skip="nothing*")


def test_every_product_of_8_bit_codes_per_channel_computes_alike():
    """Their rows' grids are found on the first product: the first and later products agree."""
    w = torch.from_numpy(np.random.default_rng(11).laplace(size=(64, 256)).astype(np.float32))
    q = nuq.quantize(w, nuq.design("uniform", 8), normalise="per-channel")
    x = torch.from_numpy(np.random.default_rng(12).standard_normal((1, 256)).astype(np.float32))
    first = nuq.qgemm(x, q, device="cpu")
    assert torch.equal(first, nuq.qgemm(x, q, device="cpu")) and torch.equal(first, nuq.qgemm(x, q, device="cpu"))
    assert close(first, x @ q.dequantize().T)
