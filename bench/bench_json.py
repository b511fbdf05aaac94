"""Google Benchmark JSON for the report scripts: one entry per benchmark name (the median where
repetitions were run, else the last run), with the name's `key:value` arguments parsed."""
import json

_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def load(path):
    """The file's JSON; a run killed at its time limit leaves the list unclosed, so the benchmarks
    finished before the kill are recovered by closing it."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        cut = text.rfind("}")
        while cut > 0:
            try:
                return json.loads(text[:cut + 1] + "]}")
            except json.JSONDecodeError:
                cut = text.rfind("}", 0, cut)
        raise


def context(path):
    return load(path).get("context", {})


def results(path):
    """Yields (family, {argument: int}, benchmark) for every benchmark in the file."""
    for b in load(path).get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if "error_occurred" in b:
            continue
        parts = b.get("run_name", b["name"]).split("/")
        fields = {p.split(":")[0]: int(p.split(":")[1]) for p in parts[1:] if ":" in p}
        yield parts[0], fields, b


def microseconds(b):
    return b["real_time"] * _US[b["time_unit"]]
