"""Every array nuq hands back is laid out as numpy itself would lay it out (C order, strides from
numpy's own itemsize), under whichever numpy is installed: Debian's 1.24 here, 2.x on the GPU
machine and in most virtual environments. pybind11 before 2.12 read numpy 2's dtypes with numpy 1's
struct layout (every itemsize 0), so arrays made in C++ had zero strides: each element read as the
first one. The build takes pybind11 2.12 or later (scripts/fetch-pybind11); these tests show it."""

import numpy as np
import pytest

import nuq
from nuq import _nuq


def test_the_module_is_built_with_a_pybind11_that_reads_numpy2_dtypes():
    assert tuple(_nuq._pybind11_version) >= (2, 12), _nuq._pybind11_version


def c_strides(a):
    strides, step = [], a.dtype.itemsize
    for n in reversed(a.shape):
        strides.insert(0, step)
        step *= max(n, 1)
    return tuple(strides)


def check(a, name):
    """`a` steps through its elements as a C-ordered array of its dtype does: under pybind11 < 2.12
    with numpy 2 the strides came out 0 (every element read as the first; numpy's own itemsize and
    nbytes stay right, so only the strides tell)."""
    assert isinstance(a, np.ndarray), name
    assert a.strides == c_strides(a), (name, a.strides, a.shape, a.dtype)


def test_every_array_nuq_returns_has_numpys_own_layout(tmp_path):
    rng = np.random.default_rng(7)
    w = rng.laplace(size=(24, 40)).astype(np.float32)
    codebook = nuq.design("msptq")
    for name in ("thresholds", "levels", "trace"):
        check(getattr(codebook, name), f"Codebook.{name}")
    assert len(set(codebook.levels.tolist())) == 4  # four distinct levels, not one read four times
    for options in ({}, {"normalise": "per-channel"}, {"group_size": 8}):
        q = nuq.quantize(w, codebook, **options)
        check(q.codes, f"codes {options}")
        check(q.levels, f"levels {options}")
        check(q.unpacked_codes(), f"unpacked codes {options}")
        restored = q.dequantize()
        check(restored, f"dequantize {options}")
        assert restored.shape == w.shape
        # Each restored weight is its code's level, computed here from the codes and levels nuq gave.
        codes = q.unpacked_codes().reshape(w.shape)
        if not options:
            assert len(np.unique(restored)) == 4
            np.testing.assert_array_equal(restored, q.levels.reshape(-1)[codes])
        if q.scales is not None:
            check(q.scales, f"scales {options}")
        x = rng.standard_normal((3, 40)).astype(np.float32)
        y = nuq.qgemm(x, q)
        check(y, f"qgemm {options}")
        np.testing.assert_allclose(y, x @ restored.T, rtol=1e-5, atol=1e-5)
    nuq.save(tmp_path / "w.safetensors", {"w": w, "b": np.arange(5, dtype=np.float16)})
    for key, a in nuq.load(tmp_path / "w.safetensors").items():
        check(a, f"load {key}")
    loaded = nuq.load(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(loaded["w"], w)
    np.testing.assert_array_equal(loaded["b"], np.arange(5, dtype=np.float16))
