"""nuq.nn on models that are not plain stacks of Linear and Conv2d layers, and on the ways code
written for torch's layers reads them: convolutions built from numpy sizes, a layer that cannot be
made (the model left as it was), codes pickled on a GPU and loaded without it, a parent reading a
swapped layer's weight, layers of other types and weights tied to them (named in warnings), what a
swapped layer's repr says of its width, and wrong inputs and arguments."""

import copy
import io
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nuq  # noqa: E402
import nuq.nn  # noqa: E402
from test_nn import close, float_twin, images  # noqa: E402


def test_a_convolution_of_numpy_sizes_swaps_and_multiplies_as_torch():
    """torch.nn.Conv2d keeps the numpy integers it was built from (config arrays, computed sizes) and
    runs with them: so do the quantized layers, as Python ints."""
    def make():
        torch.manual_seed(12)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, np.int64(3), stride=np.int64(2), padding=np.int32(1),
                                                   dilation=(np.int64(1), np.int64(2))), torch.nn.ReLU())

    model = make()
    assert type(model[0].stride[0]) is np.int64  # what torch keeps
    codebook = nuq.design("msptq")
    twin = float_twin(model, nuq.quantize_state_dict(model.state_dict(), codebook))
    nuq.nn.quantize_modules(model, codebook)
    layer = model[0]
    assert isinstance(layer, nuq.nn.QuantizedConv2d)
    assert (layer.stride, layer.padding, layer.dilation) == ((2, 2), (1, 1), (1, 2))
    assert all(type(v) is int for v in layer.stride + layer.padding + layer.dilation)
    x = images(2, seed=13)
    with torch.no_grad():
        y = model(x)
        assert y.shape == twin(x).shape and close(y, twin(x))
        fresh = make()
        nuq.nn.load_quantized(fresh, model.state_dict())
        assert isinstance(fresh[0], nuq.nn.QuantizedConv2d) and torch.equal(fresh(x), y)


def test_a_layer_that_cannot_be_made_leaves_the_model_as_it_was():
    """Every quantized layer is made before the first is swapped: a refusal of a later layer leaves
    the earlier ones (same objects, same classes) as the caller had them."""
    codebook = nuq.design("msptq")

    def with_wrong_bias():  # a bias torch would refuse at the first forward pass
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        model[2].bias = torch.nn.Parameter(torch.zeros(3))
        return model

    def with_zero_stride():  # a convolution torch builds and cannot run
        return torch.nn.Sequential(torch.nn.Linear(8, 18), torch.nn.Unflatten(1, (2, 3, 3)),
                                   torch.nn.Conv2d(2, 4, 3, stride=0))

    for make, message in ((with_wrong_bias, r"^quantize_modules: layer '2' \(Linear\): QuantizedLinear: bias of "
                                            r"shape \(3,\), not the weights' 4 outputs"),
                          (with_zero_stride, r"^quantize_modules: layer '2' \(Conv2d\): stride \(0, 0\) and dilation "
                                             r"\(1, 1\) must be positive")):
        model = make()
        before = list(model)
        with pytest.raises(ValueError, match=message):
            nuq.nn.quantize_modules(model, codebook)
        assert list(model) == before and [type(m) for m in model] == [type(m) for m in before]
    good = torch.nn.Sequential(torch.nn.Linear(8, 18), torch.nn.Unflatten(1, (2, 3, 3)), torch.nn.Conv2d(2, 4, 3))
    nuq.nn.quantize_modules(good, codebook)
    model = with_zero_stride()
    before = list(model)
    with pytest.raises(ValueError, match=r"^load_quantized: layer '2' \(Conv2d\): QuantizedConv2d: stride \(0, 0\)"):
        nuq.nn.load_quantized(model, good.state_dict())
    assert list(model) == before and type(model[0]) is torch.nn.Linear


def test_codes_pickled_on_a_gpu_come_back_on_the_cpu_where_it_is_not():
    """A model quantized on a GPU and torch.load-ed with map_location="cpu" where that device is not:
    its codes dequantize (and its backward pass runs) on the CPU. Simulated by the device each
    QuantizedTensor records, one past the devices this machine has."""
    torch.manual_seed(14)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8))
    codebook = nuq.design("msptq")
    twin = float_twin(model, nuq.quantize_state_dict(model.state_dict(), codebook))
    q = nuq.nn.quantize_modules(model, codebook)["0"]
    expected = q.dequantize()
    q._device = torch.device("cuda", torch.cuda.device_count())  # a GPU this machine does not have
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, map_location="cpu")
    for codes in (restored[0].weight, copy.deepcopy(q)):
        assert codes._device == torch.device("cpu") and codes.device == torch.device("cpu")
        back = codes.dequantize()
        assert isinstance(back, torch.Tensor) and back.device.type == "cpu" and torch.equal(back, expected)
    state = nuq.dequantize_state_dict(restored.state_dict(), as_torch=True)
    assert state["0.weight"].device.type == "cpu" and torch.equal(state["0.weight"], expected)
    x1 = torch.randn(3, 16, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    restored(x1).square().sum().backward()
    twin(x2).square().sum().backward()
    assert close(x1.grad, x2.grad)
    kept = copy.deepcopy(nuq.quantize(torch.randn(4, 8), codebook))  # a device that exists is kept
    assert kept._device == torch.device("cpu")


def test_a_parent_reading_the_weight_gets_a_tensors_answers_or_a_type_error():
    """What code written for a Linear reads of its weight: the shape's answers and the device as a
    tensor's; another tensor attribute a TypeError that says what the codes are (and an
    AttributeError, so that hasattr() still answers)."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 6))
    nuq.nn.quantize_modules(model, nuq.design("msptq"))
    w = model[0].weight
    assert w.shape == (6, 8) and w.size() == torch.Size([6, 8]) and w.numel() == 48 and w.dim() == 2 == w.ndim
    assert w.device == torch.device("cpu") and torch.zeros(6, device=w.device).device == w.device
    assert w.dtype == "F32"  # the QuantizedTensor's own: nuq's name of the dtype quantized
    packed = r"QuantizedTensor.{}: a nuq.QuantizedTensor holds packed codes, not a tensor: take q.dequantize\(\)"
    for read in ("T", "float", "to", "is_cuda"):
        with pytest.raises(TypeError, match=packed.format(read)):
            getattr(w, read)
    with pytest.raises(TypeError, match=packed.format("T")):
        torch.randn(2, 8) @ w.T
    assert not hasattr(w, "T") and getattr(w, "to", None) is None
    with pytest.raises(AttributeError, match="object has no attribute 'no_such_thing'") as raised:
        w.no_such_thing
    assert not isinstance(raised.value, TypeError)
    from_numpy = nuq.quantize(np.ones((4, 8), np.float32), nuq.design("msptq"), normalise="none")
    assert from_numpy.device == torch.device("cpu")  # dequantized to a numpy array, in host memory


def test_layers_of_other_types_holding_weights_are_named_with_the_float_weights_left():
    torch.manual_seed(15)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(40, 8)
            self.conv1d = torch.nn.Conv1d(8, 8, 3)
            self.conv3d = torch.nn.Conv3d(2, 2, 2)
            self.up = torch.nn.ConvTranspose2d(2, 2, 2)
            self.lstm = torch.nn.LSTM(8, 8)
            self.bilinear = torch.nn.Bilinear(8, 8, 4)
            self.bag = torch.nn.EmbeddingBag(10, 8)
            self.norm = torch.nn.LayerNorm(8)  # vectors only: not a weight left
            self.head = torch.nn.Linear(8, 4)

    model = Net()
    float_weights = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("head.")]
    values = sum(p.numel() for p in float_weights)
    with pytest.warns(UserWarning) as said:
        assert list(nuq.nn.quantize_modules(model, nuq.design("msptq"))) == ["head"]
    texts = [str(w.message) for w in said]
    assert len(texts) == 1
    assert re.fullmatch(
        r"quantize_modules: left as they are: embed \(Embedding: only Linear and Conv2d are swapped\), conv1d "
        r"\(Conv1d: .*\), conv3d \(Conv3d: .*\), up \(ConvTranspose2d: .*\), lstm \(LSTM's weight_ih_l0, "
        r"weight_hh_l0: only Linear and Conv2d are swapped\) and 2 more; "
        rf"float weights left: {len(float_weights)} of the model's {len(float_weights) + 1} "
        rf"\({values} of {values + 32} values\)", texts[0]), texts[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what skip names is left without a word (and names a tensor)
        model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8))
        nuq.nn.quantize_modules(model, nuq.design("msptq"), skip="0.*")


def test_a_head_tied_to_a_float_embedding_is_untied_with_a_warning():
    torch.manual_seed(16)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 16)
            self.head = torch.nn.Linear(16, 50, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, tokens):
            return self.head(self.embed(tokens))

    model, tokens = LM(), torch.tensor([[1, 7, 49], [0, 3, 3]])
    embedding = model.embed.weight
    codebook = nuq.design("msptq")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.head.weight = torch.nn.Parameter(nuq.quantize(embedding.detach(), codebook).dequantize())
    with pytest.warns(UserWarning, match=r"^quantize_modules: tied weights untied \(the float parameter stays as it "
                                         r"is\): head.weight, tied to embed.weight \(Embedding\); each swapped layer "
                                         r"holds codes of its own now"):
        assert list(nuq.nn.quantize_modules(model, codebook)) == ["head"]
    assert isinstance(model.head, nuq.nn.QuantizedLinear) and model.embed.weight is embedding
    with torch.no_grad():
        assert close(model(tokens), twin(tokens))
    fresh = LM()
    with pytest.warns(UserWarning, match=r"^load_quantized: tied weights untied .*: head.weight, tied to embed.weight"):
        nuq.nn.load_quantized(fresh, model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(tokens), model(tokens))
    kept = LM()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="no tensor to quantize"):  # skip keeps the tie (and its float)
            nuq.nn.quantize_modules(kept, codebook, skip="head.*")
    assert not any("untied" in str(w.message) for w in said) and kept.head.weight is kept.embed.weight


@pytest.mark.parametrize("method, bits, shown", [("lloyd-max", 3, "3-bit lloyd-max (stored as 4-bit codes)"),
                                                 ("uniform", 6, "6-bit uniform (stored as 8-bit codes)"),
                                                 ("msptq", 2, "2-bit msptq codes")])
def test_the_repr_shows_the_designs_width_and_the_stored_one_where_wider(method, bits, shown):
    model = torch.nn.Sequential(torch.nn.Linear(16, 16))
    nuq.nn.quantize_modules(model, nuq.design(method, bits))
    assert f"bias=True, {shown}, global, device='auto')" in repr(model[0])


def test_an_integer_input_is_refused_by_either_layer_in_its_words():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(64, 2))
    nuq.nn.quantize_modules(model, nuq.design("msptq"))
    with pytest.raises(TypeError, match=r"^QuantizedConv2d: input of dtype torch.uint8; a floating tensor"):
        model(torch.ones(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"^QuantizedLinear: input of type ndarray; a torch tensor"):
        model[2](np.ones((1, 64), np.float32))


def test_wrong_argument_types_are_type_errors_of_quantize_modules():
    codebook = nuq.design("msptq")
    for options, message in (({"codebook": "msptq"}, r"codebook must be a nuq.Codebook .*, not str"),
                             ({"codebook": codebook, "group_size": 8.0}, "group_size must be an int, not float"),
                             ({"codebook": codebook, "skip": 3}, r"skip: 3; give None, a callable"),
                             ({"codebook": codebook, "skip": [re.compile("0"), 3]}, "skip: 3 is neither a glob")):
        model = torch.nn.Sequential(torch.nn.Linear(16, 8))
        layer = model[0]
        with pytest.raises(TypeError, match="^quantize_modules: " + message):
            nuq.nn.quantize_modules(model, **options)
        assert model[0] is layer


@pytest.mark.skipif(any(d.startswith("cuda") for d in nuq.devices()), reason="nuq has a CUDA device here")
def test_cuda_is_refused_up_front_where_nuq_has_no_gpu():
    model = torch.nn.Sequential(torch.nn.Linear(16, 8))
    state = nuq.quantize_state_dict(model.state_dict(), nuq.design("msptq"))
    for call, name in ((lambda: nuq.nn.load_quantized(model, state, device="cuda"), "load_quantized"),
                       (lambda: nuq.nn.quantize_modules(model, nuq.design("msptq"), device="cuda"), "quantize_modules"),
                       (lambda: nuq.nn.QuantizedLinear(state["0.weight"], device="cuda"), "QuantizedLinear")):
        with pytest.raises(ValueError, match=f"^{name}: device='cuda', and nuq has no CUDA device here"):
            call()
        assert type(model[0]) is torch.nn.Linear
