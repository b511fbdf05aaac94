"""What a researcher's slips get from the package: a wrong argument named in Python's terms (not a
pybind signature), paths of every kind, two threads saving one file, a transposed FP8 view refused
instead of written in the wrong order, mismatched designs and float64 tensors warned of; and
pickling (copy.deepcopy, torch.save of a quantized state dict) that keeps every field."""

import copy
import os
import pathlib
import pickle
import re
import threading
import time
import warnings

import numpy as np
import pytest

import nuq


@pytest.fixture
def w(rng):
    return rng.laplace(size=(32, 64)).astype(np.float32)


@pytest.mark.parametrize("call,error,message", [
    (lambda w, c: nuq.quantize(w, "msptq"), TypeError, "codebook must be a nuq.Codebook"),
    (lambda w, c: nuq.quantize(w, c.to_json()), TypeError, "not str"),
    (lambda w, c: nuq.quantize(w, c, group_size=8.0), TypeError, "group_size must be an int, not float"),
    (lambda w, c: nuq.quantize(w, c, group_size=True), TypeError, "not bool"),
    (lambda w, c: nuq.quantize(w, c, group_size=2**63), ValueError, "positive multiple of 8"),
    (lambda w, c: nuq.quantize(w, c, normalise=1), TypeError, "normalise must be a string"),
    (lambda w, c: nuq.quantize(w, c, nonfinite=None), TypeError, "nonfinite must be a string"),
    (lambda w, c: nuq.quantize_state_dict({0: w}, c), TypeError, "the name 0 is not a string"),
    (lambda w, c: nuq.quantize_state_dict({"a": w}, c, skip=b"a"), TypeError, "not bytes"),
    (lambda w, c: nuq.save("x.safetensors", {("a", 1): w}), TypeError, "is not a string"),
    (lambda w, c: nuq.save("x.safetensors", {"a": w}, metadata={"k": 1}), TypeError, "strings to strings"),
    (lambda w, c: nuq.save("x.safetensors", [w]), TypeError, "a dict of name -> tensor"),
    (lambda w, c: nuq.save("x.safetensors", {"a": w}, metadata="xy"), TypeError, "metadata must be a dict"),
    (lambda w, c: nuq.save(3, {"a": w}), TypeError, "a path must be str, bytes or os.PathLike"),
    (lambda w, c: nuq.load(None), TypeError, "not NoneType"),
    (lambda w, c: nuq.quantize(None, c), TypeError, "w must be a numpy array or a PyTorch tensor, not NoneType"),
    (lambda w, c: nuq.quantize(w, c, name=123), TypeError, "the name 123 is not a string"),
    # A lone surrogate (os.fsdecode's of a byte that is not UTF-8) is a str no file can hold.
    (lambda w, c: nuq.quantize(w, c, name="a\udcff"), ValueError, r"the name 'a\\udcff' is not Unicode text"),
    (lambda w, c: nuq.quantize(w, c, normalise="\udcff"), ValueError, "normalise='.udcff' is not Unicode text"),
    (lambda w, c: nuq.save("x.safetensors", {"\udcff": w}), ValueError, "is not Unicode text"),
    (lambda w, c: nuq.save("x.safetensors", {"a": w}, metadata={"k": "\udcff"}), ValueError,
     "the metadata value of 'k' is not Unicode text"),
    # The binding's own text arguments say so too (pybind11 said only "incompatible function arguments").
    (lambda w, c: nuq.design("\udcff"), ValueError, r"design: method='\\udcff' is not Unicode text"),
    (lambda w, c: nuq.design("uniform", 4, rule="a\udcff"), ValueError, "design: rule='a.udcff' is not Unicode text"),
    (lambda w, c: nuq.sweep("\udcff", 1, 2, 0.5), ValueError, "sweep: method=.* is not Unicode text"),
    (lambda w, c: nuq.support_xmax("\udcff"), ValueError, "support_xmax: support=.* is not Unicode text"),
    (lambda w, c: nuq.Codebook.from_json("\udcff"), ValueError, "Codebook.from_json: text=.* is not Unicode text"),
    (lambda w, c: nuq.design(3), TypeError, "design: method must be a string, not int"),
    (lambda w, c: nuq.design("uniform", 4, rule=1), TypeError, "design: rule must be a string, not int"),
    (lambda w, c: nuq.Codebook.from_json(b"{}"), TypeError, "Codebook.from_json: text must be a string, not bytes"),
    (lambda w, c: nuq.design("uniform", 2, init=0.5), ValueError, "init belongs to the iterative rule"),
    (lambda w, c: nuq.design("ternary", epsilon=1e-9), ValueError, "epsilon belongs to the iterative rule"),
    (lambda w, c: nuq.Codebook(), TypeError, "made by nuq's functions"),
    (lambda w, c: nuq.QuantizedTensor(), TypeError, "made by nuq's functions"),
    (lambda w, c: nuq.Codebook.__new__(nuq.Codebook), TypeError, ""),  # never an empty instance to call into
    (lambda w, c: nuq.QuantizedTensor.__new__(nuq.QuantizedTensor), TypeError, ""),
    (lambda w, c: nuq.quantize("abc", c), TypeError, "not str"),
    (lambda w, c: nuq.quantize(w.tolist(), c), TypeError, "not list"),
    (lambda w, c: nuq.quantize(np.zeros((0, 5), np.float32), c), ValueError, r"empty \(shape \(0, 5\)\)"),
    (lambda w, c: nuq.quantize(np.zeros((5, 0), np.float32), c, normalise="none"), ValueError, "nothing to quantize"),
    (lambda w, c: nuq.dequantize_state_dict(None), TypeError, "a dict of name -> tensor, not NoneType"),
    (lambda w, c: nuq.qgemm(np.ones((2, 64), np.complex64), nuq.quantize(w, c)), TypeError, "x is complex"),
    (lambda w, c: nuq.qgemm(np.float32(1), nuq.quantize(w, c)), ValueError, "at least one dimension"),
    (lambda w, c: nuq.qgemm(None, nuq.quantize(w, c)), TypeError, "x must be a numpy array or torch tensor"),
    (lambda w, c: nuq.qgemm({}, nuq.quantize(w, c)), TypeError, "torch tensor of the inputs, not dict"),
    (lambda w, c: nuq.qgemm(np.ones((2, 64), np.float32), nuq.quantize(w, c), "abc"), TypeError,
     "bias must be a vector of the outputs' biases, not str"),
    (lambda w, c: nuq.qgemm(np.ones((2, 64), np.float32), nuq.quantize(w, c), np.ones(31, np.float64)[::1]), ValueError,
     "bias must hold the weights' 32 output values, not 31"),
    (lambda w, c: nuq.qgemm(np.ones((2, 64), np.float32), nuq.quantize(w, c), np.ones((4, 8), np.float32)), ValueError,
     "bias must be a vector of the weights' 32 output values, not of shape \\(4, 8\\)"),
    # Whole-number arguments: a bool is not taken for 0 or 1, nor a float or a string for the number,
    # and a number beyond any count is refused by the argument's name (numpy's integers are taken).
    (lambda w, c: nuq.design("uniform", True), TypeError, "design: bits must be an int, not bool"),
    (lambda w, c: nuq.design("uniform", np.True_), TypeError, "design: bits must be an int, not numpy.bool"),
    (lambda w, c: nuq.design("uniform", 2.0), TypeError, "design: bits must be an int, not float"),
    (lambda w, c: nuq.design("uniform", 2**40), ValueError, "design: bits=1099511627776 is out of range"),
    (lambda w, c: nuq.design("uniform", 2, levels=True), TypeError, "levels must be an int, not bool"),
    (lambda w, c: nuq.design("uniform", 2, levels=-3), ValueError, "levels=-3 is negative"),
    (lambda w, c: nuq.design("sptq", levels=4), ValueError, "sptq has 4 levels of its own"),
    (lambda w, c: nuq.sweep("sptq", 0.5, 1.0, 0.1, bits="2"), TypeError, "sweep: bits must be an int, not str"),
    (lambda w, c: nuq.mismatch(False, -1, 1), TypeError, "mismatch: bits must be an int, not bool"),
    (lambda w, c: nuq.bit_rate(40, -10, 0, min_bits=True), TypeError, "min_bits must be an int, not bool"),
    (lambda w, c: nuq.bit_rate(40, -10, 0, max_bits=16.0), TypeError, "max_bits must be an int, not float"),
    (lambda w, c: nuq.worst_sqnr(2**33, -1), ValueError, "worst_sqnr: bits=8589934592 is out of range"),
    (lambda w, c: nuq.set_num_threads(True), TypeError, "threads must be an int, not bool"),
    (lambda w, c: nuq.set_num_threads(2**31), ValueError, "threads=2147483648 is out of range"),
    # Weights that are not finite: the message says what saturating does, in Python's terms too.
    (lambda w, c: nuq.quantize(np.full((2, 8), np.inf, np.float32), c), ValueError, "nonfinite='saturate'"),
])
def test_wrong_arguments_are_named_in_pythons_terms(call, error, message, w):
    with pytest.raises(error, match=message):
        call(w, nuq.design("msptq"))


def test_numpys_integers_are_whole_numbers():
    assert nuq.design("uniform", np.int64(3), levels=np.uint8(7)).levels.size == 7
    assert nuq.worst_sqnr(np.int32(12), -5.0)["bits"] == 12
    assert nuq.bit_rate(40.0, -10.0, 0.0, min_bits=np.int16(4), max_bits=np.int64(16))["bits"] == 11


@pytest.mark.parametrize("edit,message", [
    (lambda j: j.replace('"bits":2', '"bits":2.5'), "'bits' must be a whole number in 1..16, got 2.5"),
    (lambda j: j.replace('"bits":2', '"bits":1099511627776'), "got 1099511627776"),
    (lambda j: j.replace('"sigma":1.0', '"sigma":1e300'), "'sigma' must be at most 1e\\+100, got 1e\\+300"),
    (lambda j: j.replace('"levels_count":4', '"levels_count":5'), "levels_count 5 but 4 levels are listed"),
    (lambda j: j.replace('"method":"msptq",', ""), "no 'method'"),
    (lambda j: j.replace('"levels":[', '"levels":["a",'), "'levels' must be a list of numbers"),
    (lambda j: j.replace('"sigma":1.0', '"sigma":1.0,"uniform_grid":true'), "'uniform_grid' must be an object"),
    # Derived fields stated wrongly, and a support no design reaches (its distortion overflowed to NaN).
    (lambda j: j.replace('"symmetric":true', '"symmetric":"x"'), "'symmetric' is \"x\" but the levels and thresholds are symmetric"),
    (lambda j: j.replace('"symmetric":true', '"symmetric":false'), "'symmetric' is false"),
    (lambda j: re.sub('"xmax":[0-9.e+-]+', '"xmax":1e308', j),
     r"'xmax' 1e\+308 is 1e\+308 standard deviations \(sigma 1.0\); at most 1000000 make sense"),
])
def test_a_hand_edited_codebook_names_its_field(edit, message):
    text = nuq.design("msptq").to_json()
    assert '"bits":2' in text and '"sigma":1.0' in text and '"levels_count":4' in text and '"symmetric":true' in text
    with pytest.raises(ValueError, match=message):
        nuq.Codebook.from_json(edit(text))
    # Whatever nuq designs it reads back (a mu of 1e150, a support of 1e105 for sigma = 1e100).
    for designed in (nuq.design("mulaw", 4, mu=1e150, xmax=3.0), nuq.design("uniform", 4, sigma=1e100, xmax=1e105)):
        np.testing.assert_array_equal(nuq.Codebook.from_json(designed.to_json()).levels, designed.levels)
    # The same design with its integers written as floats (2.0) is the same design.
    again = nuq.Codebook.from_json(text.replace('"bits":2', '"bits":2.0'))
    np.testing.assert_array_equal(again.levels, nuq.design("msptq").levels)


def test_paths_as_str_bytes_and_pathlib_name_the_same_file(tmp_path, w, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nuq.save(b"bytes.safetensors", {"w": w})  # once written as the literal name "b'bytes.safetensors'"
    assert sorted(os.listdir(tmp_path)) == ["bytes.safetensors"]
    for path in (b"bytes.safetensors", "bytes.safetensors", pathlib.Path("bytes.safetensors")):
        np.testing.assert_array_equal(nuq.load(path)["w"], w)
        assert nuq.load_metadata(path) == {"format": "pt"}
    nuq.save(b"\xff.safetensors", {"w": w})  # a name that is not UTF-8, as the file system has it
    np.testing.assert_array_equal(nuq.load(b"\xff.safetensors")["w"], w)
    assert b"\xff.safetensors" in os.listdir(b".")


def test_threads_saving_one_path_each_write_a_whole_file(tmp_path, w):
    # Each call writes its own temporary file, renamed into place: no call fails, none leaves one.
    path = tmp_path / "shared.safetensors"
    values = {i: w * (i + 1) for i in range(4)}
    failures = []
    start = threading.Barrier(len(values))

    def save(i):
        start.wait()
        try:
            for _ in range(10):
                nuq.save(path, {"w": values[i]})
        except Exception as error:  # noqa: BLE001 (every failure is the finding)
            failures.append(error)

    threads = [threading.Thread(target=save, args=(i,)) for i in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert os.listdir(tmp_path) == ["shared.safetensors"]
    assert any(np.array_equal(nuq.load(path)["w"], v) for v in values.values())


def test_fp8_bytes_are_saved_only_as_load_gave_them(tmp_path):
    from test_state_dicts import write  # the test suite's raw safetensors writer
    write(tmp_path / "f8.safetensors", {"e4": ("F8_E4M3", [2, 3], bytes([0x38, 0x7F, 0x40, 0, 0xB8, 0x08])),
                                        "f4": ("F4", [2, 4], bytes([1, 2, 3, 4]))})
    loaded = nuq.load(tmp_path / "f8.safetensors")
    nuq.save(tmp_path / "again.safetensors", loaded)
    np.testing.assert_array_equal(nuq.load(tmp_path / "again.safetensors")["e4"], loaded["e4"])
    for bad in (loaded["e4"].T, loaded["e4"].reshape(3, 2), loaded["f4"][:, :1]):
        with pytest.raises(ValueError, match="write them as nuq.load gave them"):
            nuq.save(tmp_path / "bad.safetensors", {"x": bad})
    assert not (tmp_path / "bad.safetensors").exists()


def test_a_codebook_for_another_sigma_or_float64_tensors_warn(w):
    with pytest.warns(UserWarning, match="designed for sigma=10"):
        nuq.quantize(w, nuq.design("msptq", sigma=10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights of that sigma, left as they are: no warning
        nuq.quantize(10 * w, nuq.design("msptq", sigma=10.0), normalise="none")
    with pytest.warns(UserWarning, match="float64 tensors kept as they are: d"):
        out = nuq.quantize_state_dict({"d": w.astype(np.float64), "f": w}, nuq.design("msptq"))
    assert out["d"].dtype == np.float64 and isinstance(out["f"], nuq.QuantizedTensor)


@pytest.mark.parametrize("options", [{}, {"normalise": "per-channel"}, {"group_size": 16}, {"normalise": "none"}])
def test_pickles_and_deep_copies_keep_every_field(w, options):
    codebook = nuq.design("msptq")
    q = nuq.quantize(w, codebook, **options)
    for again in (pickle.loads(pickle.dumps(q)), copy.deepcopy(q)):
        np.testing.assert_array_equal(again.codes, q.codes)
        np.testing.assert_array_equal(again.dequantize(), q.dequantize())
        assert (again.sqnr_ex_db, again.within, again.stats, again.group_size, again.normalisation, again.dtype) == \
               (q.sqnr_ex_db, q.within, q.stats, q.group_size, q.normalisation, q.dtype)
        assert again.codebook.to_json() == codebook.to_json()
    copied = pickle.loads(pickle.dumps(codebook))
    np.testing.assert_array_equal(copied.trace, codebook.trace)  # the rule's iterates too
    assert copied.iterations == codebook.iterations and copied.sqnr_db == codebook.sqnr_db


@pytest.mark.parametrize("options", [{}, {"group_size": 16}])
def test_tampered_pickles_are_refused_as_files_are(w, options):
    """A pickle is read as a file is: no mean, scale or level that is not finite (a grouped
    tensor's levels come from its mean), and parts of the wrong types are a TypeError."""
    q = nuq.quantize(w, nuq.design("msptq"), **options)
    restore, (state,), *_ = q.__reduce__()
    for index, value in ((7, float("nan")), (8, float("inf")), (7, 1e308 if options else float("-inf"))):
        tampered = list(state)
        tampered[index] = value
        with pytest.raises(ValueError, match="must be finite"):
            restore(tuple(tampered))
    tampered = list(state)
    tampered[2] = None
    with pytest.raises(TypeError, match="a pickled state of the wrong types"):
        restore(tuple(tampered))
    codebook_restore, codebook_state, *_ = nuq.design("msptq").__reduce__()
    with pytest.raises(TypeError, match="Codebook: a pickled state of the wrong types"):
        codebook_restore((5, []))
    # The device dequantize returns to is a torch.device or None (a string failed later, in dequantize).
    for attributes, message in (({"_device": "junk"}, "a pickled _device of type str"),
                                ([("_device", None)], "pickled attributes of type list")):
        with pytest.raises(TypeError, match=message):
            pickle.loads(pickle.dumps(_Reduced(restore, state, attributes)))


class _Reduced:
    """Pickles as a QuantizedTensor with the given attributes (as a tampered pickle would)."""

    def __init__(self, restore, state, attributes):
        self.reduced = (restore, (state,), attributes)

    def __reduce__(self):
        return self.reduced


def test_torch_save_of_a_quantized_state_dict_comes_back_as_torch(tmp_path, w):
    torch = pytest.importorskip("torch")
    quantized = nuq.quantize_state_dict({"layer.weight": torch.from_numpy(w), "layer.bias": torch.ones(32)},
                                        nuq.design("msptq"))
    torch.save(quantized, tmp_path / "q.pt")
    back = torch.load(tmp_path / "q.pt", weights_only=False)
    restored = back["layer.weight"].dequantize()
    assert isinstance(restored, torch.Tensor)  # the device it returns to was pickled with it
    torch.testing.assert_close(restored, quantized["layer.weight"].dequantize())


def test_messages_keep_file_names_that_are_not_utf8(tmp_path):
    """A message naming a file whose name is not UTF-8 keeps its text, the odd byte escaped."""
    missing = os.fsencode(tmp_path) + b"/\xff.safetensors"
    with pytest.raises(ValueError, match=r"\\xff\.safetensors"):
        nuq.load(missing)
    with pytest.raises(ValueError, match=r"nodir\\xfe"):
        nuq.save(os.fsencode(tmp_path) + b"/nodir\xfe/x.safetensors", {"a": np.zeros(2, np.float32)})


def test_save_refuses_what_load_would_refuse(tmp_path):
    """A file save writes is one load reads: a tagged shape with a negative or overflowing
    dimension, or a tensor named like the metadata, is refused before anything is written."""
    path = tmp_path / "x.safetensors"
    for shape in ([-4, -1], [2**32, 2**32, 1]):
        tagged = np.dtype("uint8", metadata={"safetensors": "F6_E2M3", "shape": shape})
        with pytest.raises(ValueError, match="x.safetensors"):
            nuq.save(path, {"a": np.zeros(3 if shape[0] < 0 else 0, tagged)})
    with pytest.raises(ValueError, match="x.safetensors: tensor '__metadata__'"):
        nuq.save(path, {"__metadata__": np.zeros(2, np.float32)})
    # A header over the 100 MiB every reader caps it at.
    with pytest.raises(ValueError, match="x.safetensors: the header would take .* over the cap of 104857600 bytes"):
        nuq.save(path, {"w": np.ones((4, 4), np.float32)}, {"x": "y" * (100 << 20)})
    assert not path.exists() and os.listdir(tmp_path) == []


def test_dimensions_no_array_can_have_are_refused_by_name(tmp_path):
    header = b'{"t":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}}'
    path = tmp_path / "huge.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ValueError, match="huge.safetensors: tensor 't': shape .* is too large"):
        nuq.load(path)


def test_the_iterative_rule_takes_init_and_epsilon():
    """What the refusals above leave: the rule they belong to still takes them."""
    assert nuq.design("msptq", init=0.5, epsilon=1e-9).iterations > nuq.design("msptq", init=0.5).iterations
    codebook = nuq.design("msptq")
    assert codebook.quantize_values(x=[0.1, -5.0]) == [codebook.levels[2], codebook.levels[0]]


def test_an_array_like_without_a_shape_is_read_through_numpy(w):
    class OnlyArray:  # __array__ and nothing else
        def __array__(self, dtype=None):
            return w
    codebook = nuq.design("msptq")
    np.testing.assert_array_equal(nuq.quantize(OnlyArray(), codebook).codes, nuq.quantize(w, codebook).codes)


def test_meta_tensors_have_no_values_to_quantize_or_multiply(w):
    torch = pytest.importorskip("torch")
    codebook = nuq.design("msptq")
    with pytest.raises(ValueError, match="meta device"):
        nuq.quantize(torch.empty(4, 8, device="meta"), codebook)
    with pytest.raises(ValueError, match="meta device"):
        nuq.qgemm(torch.empty(2, 64, device="meta"), nuq.quantize(w, codebook))
    with pytest.raises(ValueError, match="meta device"):  # float64 is rounded first: refused before that
        nuq.quantize(torch.empty(4, 8, device="meta", dtype=torch.float64), codebook)
    with pytest.raises(TypeError, match="sparse_coo layout"):
        nuq.quantize(torch.randn(4, 8, dtype=torch.float64).to_sparse(), codebook)


def test_a_torch_tensor_of_more_dimensions_than_numpy_holds_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    deep = torch.ones([1] * 33)  # (numpy's own error named no tensor)
    with pytest.raises(ValueError, match="tensor 'deep' has 33 dimensions; numpy and safetensors hold at most 32"):
        nuq.quantize(deep, nuq.design("msptq"), name="deep")
    with pytest.raises(ValueError, match="tensor 'deep' has 33 dimensions"):
        nuq.save(tmp_path / "never-written.safetensors", {"deep": deep})
    assert not list(tmp_path.iterdir())


def test_float64_beyond_float32_is_found_in_any_slice(rng):
    """The range check of float64 input looks at slices of about 2^20 values: a weight beyond
    float32's range is found and named wherever it lies, a scalar's too."""
    codebook = nuq.design("msptq")
    w = rng.laplace(size=(3, 1 << 19))  # slices of two rows: the last row is a slice of its own
    w[2, 5] = 1e300
    with pytest.raises(ValueError, match=r"element \[2, 5\] is 1e\+300, beyond float32's range"):
        nuq.quantize(w, codebook)
    wide = rng.laplace(size=(5 << 20,))
    wide[(5 << 20) - 1] = -1e39
    with pytest.raises(ValueError, match=r"element \[5242879\] is -1e\+39"):
        nuq.quantize(wide, codebook)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"element \[2, 5\] is 1e\+300"):
        nuq.quantize(torch.from_numpy(w), codebook)


def test_lazy_views_are_read_as_their_values_and_sparse_tensors_are_named(w):
    """PyTorch's conjugate and negative views hold a bit, not values: nuq reads the values they
    stand for (a complex one is then refused by dtype); a sparse tensor is refused by layout."""
    torch = pytest.importorskip("torch")
    codebook = nuq.design("msptq")
    t = torch.from_numpy(w)
    np.testing.assert_array_equal(nuq.quantize(t._neg_view(), codebook).codes, nuq.quantize(-t, codebook).codes)
    with pytest.raises(ValueError, match="C64 cannot be quantized"):
        nuq.quantize(torch.randn(4, 8, dtype=torch.complex64).conj(), codebook)
    with pytest.raises(TypeError, match="sparse_coo layout; nuq reads dense tensors"):
        nuq.quantize(t.to_sparse(), codebook)


def test_tensors_quantized_by_separate_calls_are_saved_as_per_tensor(tmp_path, rng):
    """Each separate "global" call used its own statistics: the file says per-tensor, each tensor
    restores as it was; tensors of one call keep their shared global map."""
    codebook = nuq.design("msptq")
    a = rng.laplace(size=(8, 16)).astype(np.float32)
    b = (3 * rng.laplace(size=(8, 16)) + 1).astype(np.float32)
    separate = {"a": nuq.quantize(a, codebook), "b": nuq.quantize(b, codebook)}
    nuq.save(tmp_path / "separate.safetensors", separate)
    together = nuq.quantize_state_dict({"a": a, "b": b}, codebook)
    nuq.save(tmp_path / "together.safetensors", together)
    for name, quantized, normalisation in (("separate", separate, "per-tensor"), ("together", together, "global")):
        back = nuq.load(tmp_path / f"{name}.safetensors")
        for key in ("a", "b"):
            assert back[key].normalisation == normalisation
            np.testing.assert_array_equal(back[key].dequantize(), quantized[key].dequantize())


def test_pickles_keep_attributes_that_refer_back(w):
    """The instance's attributes are pickle's own state, set once the tensor exists: a cycle survives."""
    q = nuq.quantize(w, nuq.design("msptq"))
    q.tag, q.me, q.owner = "x", q, {"layer": q}
    for again in (pickle.loads(pickle.dumps(q)), copy.deepcopy(q)):
        assert again.tag == "x" and again.me is again and again.owner["layer"] is again
        np.testing.assert_array_equal(again.codes, q.codes)


def test_a_codebook_json_nested_without_end_is_refused():
    text = nuq.design("msptq").to_json()
    deep = text.replace('"msptq"', "[" * 200000 + "]" * 200000, 1)
    with pytest.raises(ValueError, match="nested deeper than 16 levels"):
        nuq.Codebook.from_json(deep)


def test_a_tensor_of_no_finite_weight_is_refused_by_name_among_others():
    """With nonfinite="saturate" NaN weights are left out of the statistics; a tensor that is all
    NaN has none left to map it by, alone or in a state dict (as `nuq quantize` refuses it)."""
    codebook = nuq.design("msptq")
    finite = np.random.default_rng(0).laplace(size=(8, 64)).astype(np.float32)
    state = {"v": finite, "w": np.full((8, 64), np.nan, np.float32)}
    for normalise in ("global", "per-tensor", "per-channel", "none"):
        with pytest.raises(ValueError, match="w: every one of its 512 weights is NaN or infinite"):
            nuq.quantize_state_dict(state, codebook, normalise=normalise, nonfinite="saturate")
    with pytest.raises(ValueError, match="every one of its 512 weights is NaN or infinite"):
        nuq.quantize(state["w"], codebook, nonfinite="saturate")


def test_a_path_holding_a_nul_byte_is_refused_not_cut_short(tmp_path, w):
    """The C library ends a name at NUL: "a.safetensors\\0.txt" would be a.safetensors."""
    target = tmp_path / "a.safetensors"
    for call in (lambda p: nuq.save(p, {"w": w}), nuq.load, nuq.load_metadata):
        with pytest.raises(ValueError, match="a path cannot hold a NUL byte"):
            call(str(target) + "\0.txt")
        with pytest.raises(ValueError, match="a path cannot hold a NUL byte"):
            call(os.fsencode(target) + b"\0")
    assert not target.exists()


def test_long_calls_let_other_threads_run(rng):
    # The GIL is released while C++ works: a Python thread spinning beside each call is never held
    # up for the call's length (unpacked_codes() and a grouped tensor's levels once held it: 45 and
    # 75 ms at this size, where a released call stalls the other thread for a few ms at most).
    w = rng.laplace(size=(4096, 2048)).astype(np.float32)
    q = nuq.quantize(w, nuq.design("uniform", 8), group_size=64)
    for name, call in (("levels", lambda: q.levels), ("unpacked_codes", q.unpacked_codes),
                       ("dequantize", q.dequantize), ("quantize", lambda: nuq.quantize(w, nuq.design("msptq")))):
        stop, longest = threading.Event(), [0.0]

        def spin():
            last = time.perf_counter()
            while not stop.is_set():
                now = time.perf_counter()
                longest[0], last = max(longest[0], now - last), now

        spinner = threading.Thread(target=spin)
        spinner.start()
        time.sleep(0.01)
        started = time.perf_counter()
        call()
        took = time.perf_counter() - started
        stop.set()
        spinner.join()
        # Held, the spinner would wait the whole call; released, at most a few switch intervals.
        assert longest[0] < max(0.5 * took, 0.02), f"{name}: the other thread waited {longest[0]:.3f} s of {took:.3f} s"


def test_slips_get_python_errors_of_the_right_kind(tmp_path, rng):
    # From a review of the package: each of these once raised the wrong kind of error, or a message
    # that named another thing.
    cb = nuq.design("msptq")
    w = rng.laplace(size=(4, 8)).astype(np.float32)
    q = nuq.quantize(w, cb)
    with pytest.raises(TypeError, match="x must be a numpy array or torch tensor of the inputs, not str"):
        nuq.qgemm("abc", q)
    with pytest.raises(TypeError, match="device must be a string"):
        nuq.qgemm(w[:1], q, device=None)
    with pytest.raises(TypeError, match="tensor 'x': a NoneType is not an array"):
        nuq.save(tmp_path / "x.safetensors", {"x": None})
    assert not (tmp_path / "x.safetensors").exists()
    assert cb.quantize_values(0.1) == cb.quantize_values([0.1])[0]  # one number, or a list of them
    with pytest.raises(ValueError, match="the sweep end must be finite, got inf"):
        nuq.sweep("uniform", 1, float("inf"), 0.5)
    np.testing.assert_array_equal(q.dequantize(q.dtype), q.dequantize())  # self.dtype's name ("F32") is taken
    with pytest.raises(ValueError, match="read-only"):  # an edit would change nothing of the codebook
        cb.levels[0] = 0.0
    # numpy's integers are group sizes too: every tensor that does not split is named at once
    with pytest.raises(ValueError, match=r"the rows of 2 tensor\(s\) do not split into groups of 8: 'a', 'b'"):
        nuq.quantize_state_dict({"a": np.ones((4, 12), np.float32), "b": np.ones((4, 20), np.float32)}, cb,
                                group_size=np.int64(8))


def test_sweep_gives_the_columns_of_nuq_design_sweep(nuq_cli):
    ours = nuq.sweep("uniform", 1, 2, 0.5)
    rows = [line.split(",") for line in nuq_cli("design", "-m", "uniform", "--sweep", "1:2:0.5").split()]
    assert rows[0] == ["xmax", "distortion", "granular", "overload", "sqnr_db"]
    for column, name in enumerate(rows[0]):
        np.testing.assert_allclose(ours[name], [float(r[column]) for r in rows[1:]], rtol=1e-9)


def test_numpy_is_told_a_quantized_tensor_is_not_an_array(w):
    # (np.asarray gave a 0-d array holding the object, which numpy's functions took for a scalar)
    q = nuq.quantize(w, nuq.design("msptq"))
    for call in (lambda: np.asarray(q), lambda: np.add(q, 1), lambda: np.stack([q, q])):
        with pytest.raises(TypeError, match=r"packed codes, not an array: take q.dequantize\(\)"):
            call()
    np.testing.assert_array_equal(np.asarray(q.dequantize()), q.dequantize())  # what it says to do
