"""Zero copy: quantizing a 1 GiB float32 array (or 2^28 float16/bfloat16 weights, 512 MiB) costs
its codes and little else.

Measured in a fresh interpreter with resource.getrusage's ru_maxrss (peak resident set, KiB on
Linux): peak after quantizing - peak before the array existed <= array + codes + 64 MiB. A copy of
the array anywhere on the way (a cast, a contiguous copy, a widened buffer) would add its size, and
a float32 copy of a 16-bit array twice its size.
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    {imports}
    import nuq
    codebook = nuq.design("msptq")
    nuq.quantize(np.random.default_rng(0).laplace(size=(64, 64)).astype(np.float32), codebook)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rows, cols = 16384, 16384  # 2^28 weights
    rng = np.random.default_rng(1)
    # Filled in slices of 256 rows (16 MiB of float32): no temporary of the whole array.
    {make}
    q = nuq.quantize(x, codebook)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # The pass really ran over every weight: the whole agrees with its first 1024 rows (a view).
    assert q.stats["count"] == rows * cols and abs(q.stats["std"] - 1) < 1e-2, q.stats
    assert abs(q.sqnr_ex_db - nuq.quantize(x[:1024], codebook).sqnr_ex_db) < 0.05
    assert q.dtype == {dtype!r}, q.dtype
    print(peak - before, nbytes, q.codes.nbytes, rows * cols)
""")

FLOAT32 = """w = np.empty((rows, cols), dtype=np.float32)
for r in range(0, rows, 256):
    rng.standard_normal(size=(256, cols), dtype=np.float32, out=w[r:r + 256])
x, nbytes = {wrap}, w.nbytes"""
FLOAT16 = """x = np.empty((rows, cols), dtype=np.float16)
for r in range(0, rows, 256):
    x[r:r + 256] = rng.standard_normal(size=(256, cols), dtype=np.float32)
nbytes = x.nbytes"""
BFLOAT16 = """x = torch.empty((rows, cols), dtype=torch.bfloat16)
for r in range(0, rows, 256):
    x[r:r + 256] = torch.from_numpy(rng.standard_normal(size=(256, cols), dtype=np.float32))
nbytes = x.element_size() * x.numel()"""

# nuq.load's bfloat16, widened to float32 and tagged: read in place, recorded as bfloat16.
LOADED_BFLOAT16 = """w = np.empty((rows, cols), dtype=np.float32)
for r in range(0, rows, 256):
    rng.standard_normal(size=(256, cols), dtype=np.float32, out=w[r:r + 256])
    w[r:r + 256].view(np.uint32)[...] &= np.uint32(0xFFFF0000)  # each value a bfloat16
x, nbytes = w.view(np.dtype(np.float32, metadata={"widened_from": "BF16"})), w.nbytes"""

CASES = {
    "numpy float32": ("", FLOAT32.format(wrap="w"), "F32"),
    "torch float32": ("import torch", FLOAT32.format(wrap="torch.from_numpy(w)"), "F32"),
    "numpy float16": ("", FLOAT16, "F16"),
    "torch bfloat16": ("import torch", BFLOAT16, "BF16"),
    "bfloat16 from nuq.load": ("", LOADED_BFLOAT16, "BF16"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_quantizing_a_large_tensor_reads_it_in_place(case):
    imports, make, dtype = CASES[case]
    if imports:
        pytest.importorskip("torch")
    code = SCRIPT.format(imports=imports, make=make, dtype=dtype)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stdout + result.stderr
    growth, array_bytes, code_bytes, count = map(int, result.stdout.split())
    assert code_bytes == count // 4  # 2 bits per weight
    print(f"{case}: peak grew by {growth / 2**20:.0f} MiB for {array_bytes / 2**20:.0f} MiB in, "
          f"{code_bytes / 2**20:.0f} MiB of codes")
    assert growth <= array_bytes + code_bytes + (64 << 20), f"peak grew by {growth / 2**20:.0f} MiB"


GROUPED = textwrap.dedent("""
    import ctypes, resource
    import numpy as np
    import nuq
    # What the tensors keep, not what the allocator holds on to: the per-share tables of the passes
    # (tens of MiB at 8 bits in groups of 8) are freed, but glibc may keep freed pages of its arenas
    # resident, more or less depending on which threads ran which shares. Trimmed before each count.
    def rss():
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
    w = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    codebook = nuq.design("uniform", 8)
    before = rss()
    kept = [nuq.quantize(w, codebook, group_size=8) for _ in range(4)]
    print(rss() - before, sum(q.nbytes for q in kept), kept[0].levels.shape[0], w.nbytes)
""")


def test_grouped_tensors_hold_their_scales_not_a_table_per_group():
    # 8 bits in groups of 8: a table of 256 levels per group would be 128 MiB per 4 MiB tensor.
    result = subprocess.run([sys.executable, "-c", GROUPED], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stdout + result.stderr
    growth, stored, tables, array_bytes = map(int, result.stdout.split())
    assert tables == 1024 * 1024 // 8  # QuantizedTensor.levels still gives every group's table, on request
    assert stored == 4 * (1024 * 1024 + 1024 * 128 * 4 + 256 * 4)  # codes, scales, one normalised table
    # A table per group kept would be 512 MiB; the slack allows one share's freed table (32 MiB)
    # that the allocator keeps in a thread's arena even after the trim.
    assert growth <= stored + (64 << 20), f"four grouped tensors kept {growth / 2**20:.0f} MiB"


FILES = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import nuq
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step, f32, bf16 = sys.argv[1:]
    rows, cols = 16384, 16384  # 2^28 weights
    if step == "save":  # a float32 array, and one as load gives bfloat16 (tagged), each 1 GiB
        w = np.empty((rows, cols), dtype=np.float32)
        for r in range(0, rows, 256):
            np.random.default_rng(r).standard_normal(size=(256, cols), dtype=np.float32, out=w[r:r + 256])
        before = peak()
        nuq.save(f32, {"w": w})
        w.view(np.uint32)[...] &= np.uint32(0xFFFF0000)  # in place: each value a bfloat16
        nuq.save(bf16, {"w": w.view(np.dtype(np.float32, metadata={"widened_from": "BF16"}))})
        print(peak() - before, 0)
    else:
        before = peak()
        w = nuq.load(f32 if step == "load-f32" else bf16)["w"]
        assert w.shape == (rows, cols) and w.dtype == np.float32
        assert (w.dtype.metadata is not None) == (step == "load-bf16")
        print(peak() - before, w.nbytes)
""")


def test_files_are_written_and_read_without_a_whole_copy(tmp_path):
    """nuq.save streams arrays to the file (bfloat16 narrowed a piece at a time); nuq.load reads a
    plain checkpoint a tensor at a time into its array: either costs at most 64 MiB besides the
    arrays (a copy of the file or of an array would add 512 MiB to 1 GiB)."""
    files = [str(tmp_path / "f32.safetensors"), str(tmp_path / "bf16.safetensors")]
    for step in ("save", "load-f32", "load-bf16"):
        result = subprocess.run([sys.executable, "-c", FILES, step, *files], capture_output=True, text=True,
                                env=os.environ)
        assert result.returncode == 0, result.stdout + result.stderr
        growth, arrays = map(int, result.stdout.split())
        print(f"{step}: peak grew by {growth / 2**20:.0f} MiB for {arrays / 2**20:.0f} MiB of arrays")
        assert growth <= arrays + (64 << 20), f"{step}: peak grew by {growth / 2**20:.0f} MiB"
    assert os.path.getsize(files[1]) < os.path.getsize(files[0]) // 2 + (1 << 20)  # written as bfloat16


STRIDED = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import torch
    import nuq
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Eight transposed views of 64 MiB each (numpy's .T, torch's .t(), bfloat16 too): a state dict
    # converted from Conv1D layers, say. Each must be copied to be written.
    tensors = {}
    for i in range(4):
        tensors[f"n{i}"] = np.full((4096, 4096), float(i), dtype=np.float32).T
        tensors[f"t{i}"] = torch.full((4096, 4096 if i < 2 else 8192), float(i),
                                      dtype=torch.float32 if i < 2 else torch.bfloat16).t()
    before = peak()
    nuq.save(sys.argv[1], tensors)
    print(peak() - before, 64 << 20)
    back = nuq.load(sys.argv[1])
    for name, t in tensors.items():
        expected = t.float().numpy() if isinstance(t, torch.Tensor) else t
        assert back[name].shape == expected.shape and np.array_equal(back[name], expected), name
    assert (back["t2"].dtype.metadata or {}).get("widened_from") == "BF16"
""")


def test_views_that_must_be_copied_are_copied_one_at_a_time(tmp_path):
    """nuq.save copies a transposed view (or a GPU tensor) as it writes it: one copy is held at a
    time, not all of them (eight views of 64 MiB grew the peak by 512 MiB)."""
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-c", STRIDED, str(tmp_path / "views.safetensors")],
                            capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stdout + result.stderr
    growth, largest = map(int, result.stdout.split())
    print(f"peak grew by {growth / 2**20:.0f} MiB for copies of {largest / 2**20:.0f} MiB each")
    assert growth <= largest + (32 << 20), f"peak grew by {growth / 2**20:.0f} MiB"


QUANTIZED_FILE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import nuq
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step, path = sys.argv[1:]
    if step == "write":  # four 8192 x 8192 tensors, 8-bit codes: 64 MiB of codes each
        rng = np.random.default_rng(3)
        w = np.empty((8192, 8192), dtype=np.float32)
        codebook = nuq.design("uniform", 8)
        quantized = {}
        for name in "abcd":
            for r in range(0, 8192, 256):
                rng.standard_normal(size=(256, 8192), dtype=np.float32, out=w[r:r + 256])
            quantized[name] = nuq.quantize(w, codebook)
        nuq.save(path, quantized)
        print(0, 0, 0)
    else:
        before = peak()
        loaded = nuq.load(path)
        codes = [loaded[name].nbytes for name in "abcd"]
        print(peak() - before, sum(codes), max(codes))
""")


def test_a_quantized_file_is_loaded_a_tensor_at_a_time(tmp_path):
    """Loading a quantized checkpoint holds its tensors' codes and, for a moment, one tensor's
    stored bytes twice: never the whole file beside the codes it becomes."""
    path = str(tmp_path / "q.safetensors")
    for step in ("write", "load"):
        result = subprocess.run([sys.executable, "-c", QUANTIZED_FILE, step, path], capture_output=True, text=True,
                                env=os.environ)
        assert result.returncode == 0, result.stdout + result.stderr
    growth, codes, largest = map(int, result.stdout.split())
    print(f"load: peak grew by {growth / 2**20:.0f} MiB for {codes / 2**20:.0f} MiB of codes")
    assert 4 * 8192 * 8192 <= codes <= 4 * 8192 * 8192 + 4096  # the codes and four tables of 256 levels
    assert growth <= codes + 2 * largest + (64 << 20), f"peak grew by {growth / 2**20:.0f} MiB"


HELD_ONCE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import nuq
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step, path = sys.argv[1:]
    rng = np.random.default_rng(5)
    codebook = nuq.design("msptq")
    rows, cols = 8192, 16384  # 2^27 weights, 512 MiB of float32
    w = np.empty((rows, cols), dtype=np.float32)
    for r in range(0, rows, 256):
        rng.standard_normal(size=(256, cols), dtype=np.float32, out=w[r:r + 256])
    if step == "mask-check":  # an embedding whose padding row (the first) is zeros: it might be a mask
        w[0] = 0
        before = peak()
        q = nuq.quantize_state_dict({"embed.weight": w}, codebook, normalise="per-tensor")["embed.weight"]
        print(peak() - before, q.codes.nbytes)
    elif step == "save":  # a state dict with a kept 512 MiB tensor and 64 MiB of codes
        q = nuq.quantize_state_dict({"embed.weight": w, "layer.weight": w[:4096] * 2}, codebook,
                                    skip="embed*")
        before = peak()
        nuq.save(path, q)
        print(peak() - before, q["layer.weight"].codes.nbytes)
    elif step == "dequantize-f16":  # restored as float16: 256 MiB, never the float32 whole beside it
        q = nuq.quantize(w, codebook)
        before = peak()
        restored = q.dequantize("float16")
        print(peak() - before, restored.nbytes)
    else:  # a product of 16 rows of 2^20 columns: its look-up tables are 256 MiB while it runs
        q = nuq.quantize(w[:4096].reshape(64, 1 << 20), codebook)
        x = w[4096:5120].reshape(16, 1 << 20)
        nuq.qgemm(x[:1], q)
        statm = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
        before = statm()
        nuq.qgemm(x, q)  # the second product lays the codes out for the look-up (as many bytes again)
        nuq.qgemm(x, q)
        print(statm() - before, q.codes.nbytes)
""")


@pytest.mark.parametrize("step", ["mask-check", "save", "dequantize-f16", "wide-product"])
def test_what_a_call_holds_beside_the_arrays(step, tmp_path):
    """Each call holds what it returns or keeps (its codes, its result, the look-up's layout) and at
    most 64 MiB more. mask-check: quantize_state_dict looks for a mask (a tensor of 0 and 1) a piece
    at a time, not with temporaries of the whole tensor (which cost 2.5x its size when its first row
    was zeros); save: a quantized state dict goes to the file as its arrays and codes lie (each was
    copied twice); dequantize-f16: restored a band at a time (the whole float32 was held beside the
    result); wide-product: a product's look-up tables for 2^20 columns (256 MiB) are not kept by
    the thread after it."""
    result = subprocess.run([sys.executable, "-c", HELD_ONCE, step, str(tmp_path / "q.safetensors")],
                            capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stdout + result.stderr
    growth, held = map(int, result.stdout.split())
    print(f"{step}: grew by {growth / 2**20:.0f} MiB ({held / 2**20:.0f} MiB returned or kept)")
    assert growth <= held + (64 << 20), f"{step}: grew by {growth / 2**20:.0f} MiB"
    if step == "save":
        loaded = subprocess.run([sys.executable, "-c", "import sys, nuq; d = nuq.load(sys.argv[1]); "
                                 "print(sorted(d), d['layer.weight'].codes.nbytes)", str(tmp_path / "q.safetensors")],
                                capture_output=True, text=True, env=os.environ)
        expected = "['embed.weight', 'layer.weight'] " + str(held)
        assert loaded.stdout.split("\n")[0] == expected, loaded.stdout + loaded.stderr
