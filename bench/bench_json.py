"""Google Benchmark JSON for the report scripts: one entry per benchmark name (the median where
repetitions were run, else the last run), with the name's `key:value` arguments parsed."""
import json

_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def results(path):
    """Yields (family, {argument: int}, benchmark) for every benchmark in the file."""
    with open(path) as f:
        data = json.load(f)
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        parts = b.get("run_name", b["name"]).split("/")
        fields = {p.split(":")[0]: int(p.split(":")[1]) for p in parts[1:] if ":" in p}
        yield parts[0], fields, b


def microseconds(b):
    return b["real_time"] * _US[b["time_unit"]]
