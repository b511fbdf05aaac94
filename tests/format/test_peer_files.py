#!/usr/bin/env python3
"""Does nuq read every conforming file of its quantized format, as a peer writes it from the spec?

usage: test_peer_files.py NUQ_BINARY    (NUQ_PYTHONPATH=<dir of the nuq package> adds nuq.load)

Each file below is written from docs/format.md alone (numpy + struct + json; nuq is never
imported here), by a writer that shares no code with nuq's (tests/format/test_format.py reads what
nuq writes; this writes what a peer following the spec may).  For each, the values the spec defines are computed with numpy and checked
against `nuq inspect [--json]`, `nuq dequantize` (bit for bit, plus its `nuq.restored_from`
fingerprint), `nuq.load(...).dequantize()`, and `nuq quantize` must refuse the file as
already quantized.  Exit 0: all pass; 1: a failure (message on stderr); 77: numpy missing.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy is missing: skipped", file=sys.stderr)
    sys.exit(77)

SIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
        "I16": 2, "U16": 2, "U8": 1, "I8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F4": 1}
NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I8": "i1",
      "U16": "<u2", "U8": "u1", "BOOL": "?", "C64": "<c8"}


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------------------- the container
def stored(a, dtype):
    """(dtype, shape, little-endian bytes) of an array; BF16 rounded to nearest, ties to even."""
    a = np.asarray(a)
    if dtype == "BF16":
        u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
        return dtype, list(a.shape), ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()
    return dtype, list(a.shape), np.ascontiguousarray(a, NP[dtype]).tobytes()


def write_file(path, tensors, meta, order=None, pad=True, trailing=b""):
    """Section "The container": 8-byte length, JSON header, tensor bytes tiling the data.
    pad/order default to nuq's own layout (spaces to 8 bytes, widest first); a peer may do
    neither ("a file without them is read as well")."""
    names = order or sorted(tensors, key=lambda n: -SIZE[tensors[n][0]])
    hdr, off = {"__metadata__": meta}, 0
    for n in names:
        dt, shape, data = tensors[n]
        hdr[n] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(hdr).encode() + trailing
    h += b" " * (-len(h) % 8 if pad else 0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(tensors[n][2] for n in names))
    return len(h)


def read_file(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    return meta, {k: (v["dtype"], v["shape"], raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
                  for k, v in hdr.items()}


# ---------------------------------------------------------------------------- quantized tensors
def pack(codes, bits):
    """Section "Tensors": U8 [rows, ceil(cols*bits/8)], LSB-first, each row starting on a byte;
    16 bits: U16 [rows, cols], little-endian."""
    if bits == 16:
        return stored(codes.astype(np.uint16), "U16")
    rows, cols = codes.shape
    out = np.zeros((rows, (cols * bits + 7) // 8), np.uint8)
    for j in range(cols):
        out[:, j * bits // 8] |= (codes[:, j].astype(np.uint32) << (j * bits % 8)).astype(np.uint8)
    return stored(out, "U8")


def quantized(name, shape, bits, kind="one", design=None, group=0, dtype="F32", mean=0.0, seed=None,
              view=None, as_float=False, entry_map=True):
    """One quantized tensor: (stored parts, description entry, restored F32 values).
    kind: "one" table F32 [1, 2^bits], "rows" F32 [rows, 2^bits], "grid" F64 [2] (16 bits),
    "grouped" (--group-size: .scales + a normalised table, value = mean + scale*level in double).
    entry_map=False leaves mean and stddev out of the entry: the description's top-level mean
    must then be the one the spec names (pass it as `mean` here and in the file's `top`).
    A design narrower than `bits` uses the first 2^design entries; the others hold the mean, and
    every third code points at one of them ("codes a codebook does not use")."""
    r = np.random.default_rng(sum(map(ord, name)) if seed is None else seed)
    rows = shape[0] if len(shape) >= 2 else 1          # 1-D: one row, scalar: one row of one
    cols = int(np.prod(shape[1:])) if len(shape) >= 2 else int(np.prod(shape))
    rows, cols = view or (rows, cols)
    used, n = 2 ** (design or bits), 2 ** bits
    codes = r.integers(0, used, (rows, cols))
    if used < n:
        codes[:, ::3] = n - 1
    parts = {name + ".codes": pack(codes, bits)}
    if kind in ("one", "rows"):
        table = np.full((rows if kind == "rows" else 1, n), mean, np.float32)
        table[:, :used] = np.sort(r.normal(mean, 1, (table.shape[0], used)), axis=1)
        parts[name + ".codebook"] = stored(table, "F32")
        values = table[np.arange(rows)[:, None] if kind == "rows" else 0, codes]
    elif kind == "grid":                       # level = float32(offset + scale*code), in double
        offset, step = r.normal(), r.uniform(1e-5, 1e-3)
        parts[name + ".grid"] = stored(np.array([offset, step]), "F64")
        values = (offset + step * codes.astype(np.float64)).astype(np.float32)
    else:
        table = np.full((1, n), 0, np.float32)
        table[0, :used] = np.sort(r.normal(0, 1, used))
        scales = r.uniform(0.01, 0.2, (rows, cols // group)).astype(np.float32)
        parts[name + ".codebook"] = stored(table, "F32")
        parts[name + ".scales"] = stored(scales, "F32")
        s = np.repeat(scales.astype(np.float64), group, axis=1)
        values = (np.float64(mean) + s * table[0, codes].astype(np.float64)).astype(np.float32)
    num = float if as_float else int                     # "an integer may be written 2 or 2.0"
    entry = {"shape": [num(s) for s in shape], "dtype": dtype, "rows": num(rows), "cols": num(cols),
             "bits": num(bits), "mean": mean, "stddev": 1.0}
    if not entry_map:
        del entry["mean"], entry["stddev"]
    if group:
        entry["group_size"] = num(group)
    return parts, entry, values.reshape(shape)


def quantized_file(path, specs, kept=None, version=1, codebook=None, norm="per-tensor", top=None,
                   key="nuq.quantized", legacy=False, **layout):
    """Write one file from quantized() specs + kept tensors; return what dequantize must give."""
    tensors, entries, expected = {}, {}, {}
    for name, kw in specs.items():
        parts, entries[name], values = quantized(name, **kw)
        tensors.update(parts)
        expected[name] = stored(values, "F32")
    desc = {"version": version, "normalisation": norm, "tensors": entries}
    if codebook:
        desc["codebook"] = codebook  # only what section "Metadata" requires: xmax_rule, sigma, iterations absent
    desc.update(top or {})
    if legacy:          # section "Versions": files before version 1 (no version; no dtype or mean)
        del desc["version"]
        for n, e in entries.items():
            if key == "nuq.quantized":          # nuq's models: the same fields, no dtype
                del e["dtype"]
                continue
            del e["mean"], e["stddev"]          # nuq.checkpoint: 16-bit codes as U8 [rows, 2*cols]
            dt, shape, data = tensors[n + ".codes"]
            if dt == "U16":
                tensors[n + ".codes"] = ("U8", [shape[0], 2 * shape[1]], data)
    tensors.update(kept or {})
    expected.update(kept or {})
    write_file(path, tensors, {"format": "pt", key: json.dumps(desc)}, **layout)
    return desc, expected, tensors


def kept_tensors(seed=1):
    r = np.random.default_rng(seed)
    return {"step": stored(np.array(12345678901), "I64"), "ids": stored(np.arange(5), "I64"),
            "mask": stored(np.array([1, 0, 1]), "BOOL"), "raw": stored(r.integers(0, 256, (3, 4)), "U8"),
            "half": stored(r.normal(size=(2, 3)), "F16"), "brain": stored(r.normal(size=4), "BF16"),
            "dbl": stored(r.normal(size=(2, 2)), "F64"), "kept_f32": stored(r.normal(size=(3, 3)), "F32"),
            "empty": stored(np.zeros((0, 3)), "F32"), "cplx": stored(np.array([1 + 2j, -3j]), "C64"),
            "fp8": ("F8_E4M3", [2, 3], bytes(range(6))), "fp4": ("F4", [2, 4], bytes([1, 2, 0x3f, 0xa0]))}


# ---------------------------------------------------------------------------- the files
def build_all(d):
    """name -> (path, description, expected dequantize output, stored tensors)."""
    files = {}

    def add(name, *a, **kw):
        p = os.path.join(d, name + ".safetensors")
        files[name] = (p,) + quantized_file(p, *a, **kw)

    # Widths 1, 2, 4, 8 in U8 and 16 in U16 with a full 65,536-entry table ("Tensors").
    add("widths", {"w%d" % b: dict(shape=[5, 13], bits=b, seed=b) for b in (1, 2, 4, 8, 16)},
        norm="global", top={"mean": 0.0, "stddev": 1.0})
    # "Code widths": 3 bits stored as 4, 5 as 8; the codebook's bits is the design's.
    add("design_wider", {"a": dict(shape=[4, 9], bits=4, design=3, mean=0.5),
                         "b": dict(shape=[2, 6], bits=8, design=5, mean=-0.25)},
        codebook={"method": "custom", "bits": 3, "levels_count": 8, "xmax": 4.0,
                  "levels": [-4, -3, -2, -1, 1, 2, 3, 4], "thresholds": [-3.5, -2.5, -1.5, 0, 1.5, 2.5, 3.5]})
    # Ranks 0-4, rows = 0 (and the old 0 x 0 view), F16/BF16 sources, per-row tables.
    add("ranks", {"scalar": dict(shape=[], bits=2, dtype="BF16"), "vec": dict(shape=[11], bits=4, dtype="F16"),
                  "mat": dict(shape=[3, 5], bits=1, kind="rows"), "r3": dict(shape=[2, 3, 4], bits=8, kind="rows"),
                  "r4": dict(shape=[2, 1, 3, 3], bits=2, dtype="F16"), "e": dict(shape=[0, 5], bits=4),
                  "e_rows": dict(shape=[0, 2, 3], bits=2, kind="rows"),
                  "e00": dict(shape=[0, 4], bits=2, view=(0, 0)), "e50": dict(shape=[5, 0], bits=2)},
        norm="per-channel")
    # 16-bit codes of a uniform design as a .grid [offset, scale].
    add("grid", {"g": dict(shape=[4, 33], bits=16, kind="grid"), "v": dict(shape=[17], bits=16, kind="grid", dtype="BF16")},
        codebook={"method": "uniform", "bits": 16, "levels_count": 65536, "xmax": 8.0,
                  "uniform_grid": {"first_level": -8.0, "step": 16.0 / 65535}})
    # --group-size files: .scales [rows, cols/G], normalised table, group_size, the entry's mean.
    add("grouped", {"g2": dict(shape=[3, 32], bits=2, kind="grouped", group=16, mean=0.0123456789),
                    "g4": dict(shape=[2, 2, 8], bits=4, kind="grouped", group=8, mean=-1.5, dtype="BF16"),
                    "g8": dict(shape=[2, 24], bits=8, kind="grouped", group=24, mean=3.25e-3),
                    "g3": dict(shape=[2, 16], bits=4, design=3, kind="grouped", group=8, mean=0.1),
                    "g0": dict(shape=[0, 16], bits=2, kind="grouped", group=8)}, norm="per-channel")
    # Grouped entries without their own mean take the description's (section "Tensors").
    add("grouped_top_mean", {"t": dict(shape=[2, 16], bits=2, kind="grouped", group=8, mean=0.25, entry_map=False)},
        norm="per-channel", top={"mean": 0.25, "stddev": 2.0})
    # Kept tensors of many dtypes; optional keys absent; header unpadded, tensors unaligned and
    # in an order unlike nuq's (bytes first) -- "what nuq writes, not what it requires".
    kept = kept_tensors()
    add("kept_v1", {"layer.weight": dict(shape=[6, 10], bits=2)}, kept=kept, pad=False,
        order=["raw", "layer.weight.codes", "mask", "half", "layer.weight.codebook"] +
              [k for k in kept if k not in ("raw", "mask", "half")])
    # Version 2: kept tensors named like parts, listed under "kept".
    r = np.random.default_rng(2)
    add("kept_v2", {"lin.weight": dict(shape=[4, 8], bits=4)}, version=2, pad=False,
        kept={"gptq.scales": stored(r.normal(size=(2, 4)), "F16"), "gptq.qweight": stored(r.integers(0, 9, (2, 4)), "I32"),
              "aqlm.codes": stored(r.integers(-9, 9, (3, 5)), "I8"), "aqlm.codebook": stored(r.normal(size=(1, 4)), "F32")},
        top={"kept": ["gptq.scales", "aqlm.codes", "aqlm.codebook"]})
    # Designs of more than 256 levels recorded by their parameters: uniform (1), mu-law (3), Lloyd-Max (4).
    add("v1_uniform", {"u": dict(shape=[2, 3], bits=16, design=9)}, norm="global",
        codebook={"method": "uniform", "bits": 9, "levels_count": 512, "xmax": 4.0,
                  "uniform_grid": {"first_level": -4.0, "step": 8.0 / 511}})
    add("v3_mulaw", {"m": dict(shape=[3, 5], bits=16, design=10)}, version=3, norm="global",
        codebook={"method": "mulaw", "bits": 10, "levels_count": 1024, "xmax": 8.0, "mu": 255.0})
    add("v4_lloyd", {"l": dict(shape=[2, 5], bits=16, design=12)}, version=4, norm="global",
        codebook={"method": "lloyd-max", "bits": 12, "levels_count": 4096})  # its x_max is the design's own
    # Whole numbers written 2.0 (version too), JSON whitespace after the header as its padding.
    add("floats", {"a": dict(shape=[3, 8], bits=2, as_float=True),
                   "b": dict(shape=[2, 16], bits=2, kind="grouped", group=8, mean=0.5, as_float=True)},
        version=1.0, pad=False, trailing=b"\n\t \r\n")
    # Files before version 1: nuq.quantized without version/dtype; nuq.checkpoint (no mean/stddev).
    add("v0_model", {"w": dict(shape=[3, 8], bits=2), "b": dict(shape=[8], bits=4)}, legacy=True)
    add("v0_checkpoint", {"w": dict(shape=[3, 8], bits=2), "w16": dict(shape=[2, 5], bits=16)},
        key="nuq.checkpoint", legacy=True)
    return files


# ---------------------------------------------------------------------------- the checks
def fingerprint(desc):
    """Section "Sharded checkpoints": 64-bit FNV-1a of the canonical text of the description
    without tensors, kept and version, with "group_sizes" (as written, else where a tensor has groups)."""
    def canon(x):
        if isinstance(x, dict):
            return {k: canon(v) for k, v in x.items()}
        if isinstance(x, list):
            return [canon(v) for v in x]
        return int(x) if isinstance(x, float) and x.is_integer() and abs(x) < 2 ** 63 else x
    d = {k: v for k, v in desc.items() if k not in ("tensors", "kept", "version")}
    sizes = sorted({int(e.get("group_size", 0)) for e in desc["tensors"].values()})
    if "group_sizes" not in d and any(sizes):
        d["group_sizes"] = sizes
    h = 0xcbf29ce484222325
    for c in json.dumps(canon(d), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode():
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    check(r.returncode in (0, 1), "%s: exit status %d (a crash)\n%s" % (" ".join(cmd), r.returncode, r.stderr))
    return r


def check_inspect(nuq, name, path, desc, tensors, expected):
    """inspect (text and --json) succeeds and reports widths, bytes, bits per weight, kept."""
    r = run([nuq, "inspect", path])
    check(r.returncode == 0, "%s: nuq inspect failed: %s" % (name, r.stderr))
    r = run([nuq, "inspect", path, "--json"])
    check(r.returncode == 0, "%s: nuq inspect --json failed: %s" % (name, r.stderr))
    js = json.loads(r.stdout)
    check(js["quantized"] and js["version"] == int(desc.get("version", 0)), "%s: inspect version %r" % (name, js["version"]))
    got = {t["name"]: t for t in js["tensors"]}
    check(set(got) == set(desc["tensors"]), "%s: inspect lists %s" % (name, sorted(got)))
    for n, e in desc["tensors"].items():
        t, nbytes = got[n], sum(len(v[2]) for k, v in tensors.items() if k.rsplit(".", 1)[0] == n)
        weights = int(np.prod(e["shape"]))
        check(t["bits"] == e["bits"] and t["shape"] == e["shape"] and t["bytes"] == nbytes
              and t.get("group_size", 0) == e.get("group_size", 0), "%s: inspect says %s of %s" % (name, t, n))
        if weights:       # "the bits per weight that the file really spends (codes and tables)"
            check(abs(t["bits_per_weight"] - 8.0 * nbytes / weights) < 1e-9, "%s: %s bits/weight %r" % (name, n, t))
    kept = {k["name"]: k for k in js["kept"]}
    want = {k: v for k, v in expected.items() if k not in desc["tensors"]}
    check(set(kept) == set(want), "%s: inspect keeps %s, not %s" % (name, sorted(kept), sorted(want)))
    for k, v in want.items():
        check((kept[k]["dtype"], kept[k]["shape"], kept[k]["bytes"]) == (v[0], v[1], len(v[2])), "%s: kept %s" % (name, kept[k]))


def check_dequantize(nuq, name, path, desc, expected, d):
    """dequantize gives the spec's values bit for bit (F32), the kept tensors byte for byte, and
    the run's fingerprint; --dtype source gives each tensor's recorded dtype."""
    out = os.path.join(d, name + ".out.safetensors")
    r = run([nuq, "dequantize", path, "-o", out])
    check(r.returncode == 0, "%s: nuq dequantize failed: %s" % (name, r.stderr))
    meta, got = read_file(out)
    check(set(got) == set(expected), "%s: dequantize wrote %s" % (name, sorted(got)))
    for n, v in expected.items():
        diff = sum(x != y for x, y in zip(got[n][2], v[2])) if len(got[n][2]) == len(v[2]) else "all"
        check(got[n] == v, "%s: dequantize %s: %s %s differs from the spec's %s %s (%s bytes differ)"
              % (name, n, got[n][0], got[n][1], v[0], v[1], diff))
    check(meta.get("nuq.restored_from") == fingerprint(desc), "%s: restored_from %s" % (name, meta))
    check(not any(k in meta for k in ("nuq.quantized", "nuq.checkpoint")), "%s: metadata kept %s" % (name, meta))
    r = run([nuq, "dequantize", path, "-o", out, "--dtype", "source"])
    check(r.returncode == 0, "%s: dequantize --dtype source failed: %s" % (name, r.stderr))
    _, got = read_file(out)
    for n, e in desc["tensors"].items():
        f32 = np.frombuffer(expected[n][2], "<f4").reshape(expected[n][1])
        dt = e.get("dtype", "F32")
        want = stored(f32.astype(np.float16) if dt == "F16" else f32, dt)
        check(got[n] == (want[0], expected[n][1], want[2]), "%s: --dtype source %s: %s" % (name, n, got[n][:2]))


LOADER = r"""
import json, sys, numpy as np, nuq
out = {}
for path in sys.argv[1:]:
    out[path] = {k: [isinstance(v, nuq.QuantizedTensor), list(np.shape(v.dequantize() if isinstance(v, nuq.QuantizedTensor) else v)),
                     np.ascontiguousarray(v.dequantize() if isinstance(v, nuq.QuantizedTensor) else v).tobytes().hex()]
                 for k, v in nuq.load(path).items()}
print(json.dumps(out))
"""


def check_python(files, pythonpath):
    """nuq.load: QuantizedTensor.dequantize() == the spec's values; others as stored (BF16
    widened exactly to float32; 8- and 4-bit floats as their bytes)."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    r = subprocess.run([sys.executable, "-c", LOADER] + [f[0] for f in files.values()],
                       capture_output=True, text=True, env=env, timeout=60)
    check(r.returncode == 0, "nuq.load failed (status %d):\n%s" % (r.returncode, r.stderr[-2000:]))
    loaded = json.loads(r.stdout)
    for name, (path, desc, expected, _) in files.items():
        got = loaded[path]
        check(set(got) == set(expected), "%s: nuq.load gave %s" % (name, sorted(got)))
        for n, (dt, shape, data) in expected.items():
            isq, gshape, hexdata = got[n]
            if dt == "BF16":     # widened to float32: the bf16 bits are the upper half
                data = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).astype("<u4").tobytes()
            check(isq == (n in desc["tensors"]), "%s: %s loaded as the wrong kind" % (name, n))
            check(bytes.fromhex(hexdata) == data and (gshape == shape or dt in ("F8_E4M3", "F4")),
                  "%s: nuq.load %s differs (shape %s, want %s %s)" % (name, n, gshape, dt, shape))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 1
    nuq = os.path.abspath(sys.argv[1])
    failures = []
    with tempfile.TemporaryDirectory() as d:
        files = build_all(d)
        for name, (path, desc, expected, tensors) in files.items():
            try:            # every file is checked; the failures are reported together
                check_inspect(nuq, name, path, desc, tensors, expected)
                check_dequantize(nuq, name, path, desc, expected, d)
                # a quantized file is refused by quantize, clearly, naming the file
                r = run([nuq, "quantize", path, "-o", os.path.join(d, "again.safetensors")])
                check(r.returncode == 1 and path in r.stderr and "already quantized" in r.stderr,
                      "%s: nuq quantize did not refuse it as already quantized (status %d): %s"
                      % (name, r.returncode, (r.stderr or r.stdout)[:300]))
            except Failure as e:
                failures.append(str(e))
        if os.environ.get("NUQ_PYTHONPATH"):
            try:
                check_python(files, os.environ["NUQ_PYTHONPATH"])
            except Failure as e:
                failures.append(str(e))
        else:
            print("NUQ_PYTHONPATH unset: nuq.load not checked")
    for f in failures:
        print("FAIL: %s" % f, file=sys.stderr)
    if failures:
        return 1
    print("ok: %d peer files read as the spec defines" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
