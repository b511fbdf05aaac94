#!/usr/bin/python3
"""scripts/make-llm-checkpoint writes checkpoints that a reader written here from the safetensors
spec (not the generator's code) accepts: Llama names and shapes, exact headers and offsets, an
index that adds up, BF16 rounded to nearest-even, weights with the promised statistics, the same
bytes for the same seed; and `nuq quantize` (NUQ_BINARY, set by ctest) quantizes one shard.

  test_make_llm_checkpoint.py                   # the tests (exit 77, skipped, without numpy)
  test_make_llm_checkpoint.py --validate DIR    # structure checks only, cheap on an 8 GB folder
"""
import filecmp
import importlib.machinery
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

try:
    import numpy as np
except ImportError:
    print("numpy is not installed (Debian: python3-numpy); skipping", file=sys.stderr)
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATOR = os.path.join(ROOT, "scripts", "make-llm-checkpoint")
ELEMENT_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}


# ---- the independent reader -------------------------------------------------------------------

def read_header(path):
    """(header dict without __metadata__, metadata, offset of the data), after checking the framing
    the spec requires of a writer: LE u64 length, JSON padded with spaces to a multiple of 8, data
    offsets that tile [0, data size) exactly, each range the size its dtype and shape say."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n % 8 or 8 + n > size:
            raise ValueError(f"{path}: header length {n} (file {size} bytes)")
        text = f.read(n)
    body = text.rstrip(b" ")
    if not body.endswith(b"}") or b"\n" in text or len(text) - len(body) >= 8:
        raise ValueError(f"{path}: header not padded with at most 7 spaces after the JSON")
    header = json.loads(body)
    metadata = header.pop("__metadata__", None)
    spans = []
    for name, t in header.items():
        begin, end = t["data_offsets"]
        if end - begin != math.prod(t["shape"]) * ELEMENT_BYTES[t["dtype"]]:
            raise ValueError(f"{path}: {name} spans {end - begin} bytes for {t['dtype']} {t['shape']}")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ValueError(f"{path}: {name} starts at {begin}, not {position} (hole or overlap)")
        position = end
    if 8 + n + position != size:
        raise ValueError(f"{path}: data ends at {position}, file holds {size - 8 - n}")
    return header, metadata, 8 + n


def read_tensor(path, name):
    """A float64 (or uint8) array decoded from the bytes, BF16 by shifting into float32's top half."""
    header, _, start = read_header(path)
    t = header[name]
    begin, end = t["data_offsets"]
    with open(path, "rb") as f:
        f.seek(start + begin)
        raw = f.read(end - begin)
    if t["dtype"] == "BF16":
        values = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.frombuffer(raw, {"F16": "<f2", "F32": "<f4", "U8": "u1"}[t["dtype"]])
    return values.astype(np.float64 if t["dtype"] != "U8" else np.uint8).reshape(t["shape"])


def validate_folder(folder):
    """Every shard's framing, the index against the shards, {"format": "pt"}; returns
    {tensor name: (file, dtype, shape)}."""
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        files = sorted(set(index["weight_map"].values()))
        count = len(files)
        for i, name in enumerate(files):
            if name != f"model-{i + 1:05d}-of-{count:05d}.safetensors":
                raise ValueError(f"shard {i} is called {name}")
    else:
        index, files = None, ["model.safetensors"]
    tensors, data_bytes = {}, 0
    for file in files:
        header, metadata, _ = read_header(os.path.join(folder, file))
        if metadata != {"format": "pt"}:
            raise ValueError(f"{file}: __metadata__ is {metadata}")
        for name, t in header.items():
            if name in tensors:
                raise ValueError(f"{name} in {tensors[name][0]} and {file}")
            tensors[name] = (file, t["dtype"], tuple(t["shape"]))
            data_bytes += t["data_offsets"][1] - t["data_offsets"][0]
    if index is not None:
        if index["metadata"]["total_size"] != data_bytes:
            raise ValueError(f"index total_size {index['metadata']['total_size']}, shards hold {data_bytes}")
        if index["weight_map"] != {name: v[0] for name, v in tensors.items()}:
            raise ValueError("the index's weight_map does not match the shards")
    return tensors


# ---- helpers ----------------------------------------------------------------------------------

def generate(*args):
    return subprocess.run([sys.executable, GENERATOR, *args], capture_output=True, text=True, timeout=120)


def llama_shapes(config):
    """The names and shapes of a Llama state dict, from config.json alone."""
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * (h // config["num_attention_heads"])
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,), "lm_head.weight": (vocab, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                       p + "mlp.down_proj.weight": (h, inter), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    return shapes


def bf16_reference(x):
    """Nearest BF16 of each float32 (ties to the even pattern), found by comparing the two
    neighbouring BF16 values in float64: a different route from the generator's integer trick."""
    bits = x.astype(np.float32).view(np.uint32)
    low = (bits >> 16).astype(np.uint32)  # truncated toward zero
    high = np.where(np.isfinite(x), low + 1, low)  # next BF16 away from zero; infinities stay

    def value(b):  # the pattern after the largest finite one stands for 2^128: overflow is a rounding
        v = (b << 16).astype(np.uint32).view(np.float32).astype(np.float64)
        return np.where(np.isinf(v), np.copysign(2.0**128, v), v)
    d_low, d_high = np.abs(x - value(low)), np.abs(value(high) - x)
    pick_high = (d_high < d_low) | ((d_high == d_low) & (low % 2 == 1))
    return np.where(pick_high, high, low).astype(np.uint16)


def load_generator():
    loader = importlib.machinery.SourceFileLoader("make_llm_checkpoint", GENERATOR)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class Checkpoint(unittest.TestCase):
    SEED = os.environ.get("NUQ_TEST_SEED", "7")  # any seed passes; the variable lets one try others

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="nuq-llm-ckpt-")
        cls.tiny = os.path.join(cls.dir, "tiny")
        result = generate("--preset", "tiny", "-o", cls.tiny, "--seed", cls.SEED, "--json")
        if result.returncode != 0:
            raise AssertionError(result.stderr)
        cls.summary = json.loads(result.stdout)
        with open(os.path.join(cls.tiny, "config.json")) as f:
            cls.config = json.load(f)
        cls.tensors = validate_folder(cls.tiny)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def folder(self, name):
        return os.path.join(self.dir, name)

    def test_names_shapes_and_grouped_query_attention(self):
        expected = llama_shapes(self.config)
        self.assertEqual({n: v[2] for n, v in self.tensors.items()}, expected)
        self.assertEqual({v[1] for v in self.tensors.values()}, {"BF16"})
        k_rows = self.tensors["model.layers.0.self_attn.k_proj.weight"][2][0]
        self.assertLess(k_rows, self.config["hidden_size"], "k/v have fewer heads than q")

    def test_index_and_summary_agree_with_the_files(self):
        with open(os.path.join(self.tiny, "model.safetensors.index.json")) as f:
            index = json.load(f)
        files = sorted(set(index["weight_map"].values()))
        self.assertGreater(len(files), 1)
        self.assertEqual(index["metadata"]["total_size"], self.summary["total_size"])
        self.assertEqual(self.summary["file_bytes"], sum(os.path.getsize(os.path.join(self.tiny, f)) for f in files))
        for shard in self.summary["shards"]:
            data = sum(math.prod(v[2]) * 2 for v in self.tensors.values() if v[0] == shard["file"])
            self.assertEqual(data, shard["bytes"])

    def test_weights_have_the_promised_statistics(self):
        def tensor(name):
            return read_tensor(os.path.join(self.tiny, self.tensors[name][0]), name)
        for name, (_, _, shape) in self.tensors.items():
            w = tensor(name)
            with self.subTest(tensor=name):
                self.assertTrue(np.isfinite(w).all())
                if len(shape) == 1:  # RMSNorm weights near 1
                    self.assertLess(abs(w.mean() - 1.0), 0.05)
                    continue
                std = w.std()
                self.assertLess(abs(w.mean()), std / 10)
                self.assertTrue(0.002 < std < 0.2, std)
                # Symmetric about 0 by quantiles (the outliers' few cubes swamp a sample skewness).
                q10, q50, q90 = np.quantile(w, [0.1, 0.5, 0.9])
                self.assertLess(max(abs(q50), abs(q90 + q10)), 0.05 * (q90 - q10))
                kurtosis = ((w - w.mean()) ** 4).mean() / std**4
                self.assertGreater(kurtosis, 4.5, "Laplacian (6) or heavier, not Gaussian (3)")
                # median|w| / mean|w| is ln 2 = 0.69 for a Laplacian (0.84 for a Gaussian), a little
                # less where outlier columns widen the tail.
                self.assertTrue(0.6 < np.median(np.abs(w)) / np.abs(w).mean() < 0.75)
        # Outliers 20-50 std out, and outlier input columns at the same channels in every layer.
        q = [tensor(f"model.layers.{i}.self_attn.q_proj.weight") for i in range(self.config["num_hidden_layers"])]
        self.assertGreater(max(np.abs(w).max() / w.std() for w in q), 20)
        tops = []
        for w in q:
            columns = np.sqrt((w**2).mean(axis=0))
            self.assertGreater(columns.max() / np.median(columns), 3)
            tops.append(set(np.argsort(columns)[-2:]))
        self.assertTrue(all(t == tops[0] for t in tops), tops)

    def test_same_seed_same_bytes_whatever_the_chunking(self):
        again = self.folder("again")
        result = generate("--preset", "tiny", "-o", again, "--seed", self.SEED, "--chunk-mb", "0.01")
        self.assertEqual(result.returncode, 0, result.stderr)
        names = sorted(os.listdir(self.tiny))
        self.assertEqual(names, sorted(os.listdir(again)))
        _, mismatch, errors = filecmp.cmpfiles(self.tiny, again, names, shallow=False)
        self.assertEqual((mismatch, errors), ([], []))
        other = self.folder("other-seed")
        self.assertEqual(generate("--preset", "tiny", "-o", other, "--seed", self.SEED + "1").returncode, 0)
        shard = "model-00001-of-00002.safetensors"
        self.assertFalse(filecmp.cmp(os.path.join(self.tiny, shard), os.path.join(other, shard), shallow=False))

    def test_bf16_and_f16_round_the_f32_values_to_nearest_even(self):
        dims = ["--hidden", "128", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--vocab", "512", "--shards", "1"]
        files = {}
        for dtype in ("F32", "F16", "BF16"):
            folder = self.folder("one-" + dtype)
            result = generate(*dims, "--dtype", dtype, "-o", folder)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(sorted(os.listdir(folder)), ["config.json", "model.safetensors"])
            files[dtype] = os.path.join(folder, "model.safetensors")
            validate_folder(folder)
        for name in read_header(files["F32"])[0]:
            exact = read_tensor(files["F32"], name)
            self.assertTrue(np.array_equal(read_tensor(files["F16"], name), exact.astype(np.float16)))
            header, _, start = read_header(files["BF16"])
            begin, end = header[name]["data_offsets"]
            with open(files["BF16"], "rb") as f:
                f.seek(start + begin)
                bits = np.frombuffer(f.read(end - begin), "<u2")
            self.assertTrue(np.array_equal(bits, bf16_reference(exact.reshape(-1))), name)

    def test_bf16_rounding_edge_cases(self):
        to_bf16 = load_generator().to_bf16
        f32 = lambda *u: np.array(u, dtype=np.uint32).view(np.float32)
        ties_and_ends = f32(0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F807FFF, 0x7F7FFFFF, 0xFF7FFFFF,
                            0x00000001, 0x80008000, 0x80000000, 0x7F800000, 0xFF800000)
        patterns = np.random.default_rng(1).integers(0, 2**32, 200000, dtype=np.uint32).view(np.float32)
        for x in (ties_and_ends, patterns[~np.isnan(patterns)]):
            got = to_bf16(x)
            self.assertEqual(got.dtype, np.dtype("<u2"))
            self.assertTrue(np.array_equal(got, bf16_reference(x.astype(np.float64))))
        nan = to_bf16(f32(0x7F800001, 0xFFC00000))
        self.assertTrue(np.isnan((nan.astype(np.uint32) << 16).view(np.float32)).all(), "NaN stays NaN")

    def test_size_plan_reaches_the_size_in_bounded_shards(self):
        for gb in (1, 8):
            result = generate("--size-gb", str(gb), "--dry-run", "--json")
            self.assertEqual(result.returncode, 0, result.stderr)
            plan = json.loads(result.stdout)
            with self.subTest(gb=gb):
                self.assertTrue(gb * 1e9 <= plan["total_size"] < gb * 1.05e9, plan["total_size"])
                self.assertTrue(all(s["bytes"] <= 2e9 for s in plan["shards"]))
                self.assertEqual(sum(s["bytes"] for s in plan["shards"]), plan["total_size"])
                d = plan["dims"]
                self.assertEqual(d["hidden"] % d["heads"], 0)
                self.assertEqual(d["heads"] % d["kv_heads"], 0)
                self.assertLess(d["kv_heads"], d["heads"])

    def test_refuses_to_overwrite_without_force(self):
        result = generate("--preset", "tiny", "-o", self.tiny)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--force", result.stderr)
        forced = self.folder("forced")
        shutil.copytree(self.tiny, forced)
        result = generate("--preset", "tiny", "-o", forced, "--seed", self.SEED, "--shards", "1", "--force")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sorted(os.listdir(forced)), ["config.json", "model.safetensors"], "old shards removed")

    @unittest.skipUnless(os.environ.get("NUQ_BINARY"), "NUQ_BINARY names the nuq to run (ctest sets it)")
    def test_nuq_quantizes_a_shard(self):
        shard = os.path.join(self.tiny, "model-00001-of-00002.safetensors")
        out = self.folder("shard1-2bit.safetensors")
        result = subprocess.run([os.environ["NUQ_BINARY"], "quantize", shard, "-o", out, "--json", "--quantize-vectors"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        in_shard = {n for n, v in self.tensors.items() if v[0] == os.path.basename(shard)}
        self.assertEqual({t["name"] for t in report["tensors"]}, in_shard)
        codes = read_header(out)[0]
        for name in in_shard:
            self.assertEqual(codes[name + ".codes"]["dtype"], "U8")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--validate":
        tensors = validate_folder(sys.argv[2])
        print(f"{sys.argv[2]}: {len(tensors)} tensors, "
              f"{sum(math.prod(v[2]) * ELEMENT_BYTES[v[1]] for v in tensors.values())} bytes of data: valid")
        sys.exit(0)
    unittest.main()
