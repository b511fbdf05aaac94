#!/usr/bin/env python3
"""Draws the figures of nuq's report from the CSV files nuq writes (nuq computes, this only draws).

usage: plots.py FIGURE_DIR [--bench RESULTS_DIR] [--only STEM ...]

Every <stem>.csv in FIGURE_DIR that this script knows becomes <stem>.png beside it; files it does
not know are left alone. With --bench, Google Benchmark JSON files in RESULTS_DIR that hold nuq's
quantized GEMM and its FP32 peers become bench-speedup.png. Needs matplotlib (Debian:
python3-matplotlib); exits 2 with a message when a data file is malformed.
"""
import argparse
import csv
import glob
import json
import math
import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401

DPI = 120
SIZE = (7.2, 4.4)  # inches: 864 x 528 pixels, readable at the width a Markdown viewer shows
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9, "axes.grid": True,
                     "grid.alpha": 0.3})


class DataError(Exception):
    pass


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows


def column(rows, name, path, convert=float):
    try:
        return [convert(r[name]) for r in rows]
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: column '{name}': {e}") from None


def save(fig, path, rect=None):
    fig.tight_layout(rect=rect)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    os.replace(tmp, path)  # a half-written PNG is never left under the final name


def transfer(src, dst):
    rows = read_csv(src)
    x = column(rows, "x", src)
    fig, ax = plt.subplots(figsize=SIZE)
    for name, colour in (("sptq", "tab:blue"), ("msptq", "tab:orange")):
        y = column(rows, name, src)
        ax.plot(x, y, drawstyle="steps-post", color=colour, label=name.upper())
        for i in range(1, len(y)):
            if y[i] != y[i - 1]:
                ax.axvline(x[i], color=colour, linestyle=":", linewidth=0.8)
    ax.set_title("Transfer characteristics of SPTQ and MSPTQ (two bits, unit Laplacian)")
    ax.set_xlabel("input x (units of σ)")
    ax.set_ylabel("output Q(x) (units of σ)")
    ax.legend(loc="upper left")
    save(fig, dst)


def convergence(src, dst):
    rows = read_csv(src)
    fig, ax = plt.subplots(figsize=SIZE)
    series = {}
    for r in rows:
        series.setdefault((r["design"], r["delta0"]), []).append((int(r["iteration"]), float(r["delta"])))
    for (design, delta0), points in series.items():
        it, delta = zip(*points)
        style, symbol = ("-o", "Δ(0)") if design == "sptq" else ("--s", "Δmod(0)")
        ax.plot(it, delta, style, markersize=3, label=f"{design.upper()}, {symbol} = {float(delta0):.4g}")
    ax.set_title("Convergence of Δ in Algorithm 1")
    ax.set_xlabel("iteration i")
    ax.set_ylabel("Δ(i) (units of σ)")
    ax.legend(ncol=2)
    save(fig, dst)


def distortion(src, dst):
    rows = read_csv(src)
    delta = column(rows, "delta", src)
    fig, ax = plt.subplots(figsize=SIZE)
    colours = {"sptq": "tab:blue", "msptq": "tab:orange"}
    for name, colour in colours.items():
        ax.plot(delta, column(rows, name, src), color=colour, label=f"D of {name.upper()}")
    optima_path = src.replace(".csv", "-optima.csv")
    if os.path.exists(optima_path):
        for r in read_csv(optima_path):
            d, dist = float(r["delta"]), float(r["distortion"])
            ax.plot([d], [dist], "o", color=colours.get(r["design"], "black"), markersize=7,
                    label=f"{r['design'].upper()} iterative optimum Δ = {d:.4f}")
    ax.set_title("Distortion against Δ (x_max = 3Δ), unit Laplacian")
    ax.set_xlabel("Δ (units of σ)")
    ax.set_ylabel("distortion D (units of σ²)")
    ax.legend()
    save(fig, dst)


def sqnr_vs_xmax(src, dst):
    rows = read_csv(src)
    x = column(rows, "xmax", src)
    fig, ax = plt.subplots(figsize=SIZE)
    lowest = math.inf
    for name in [c for c in rows[0].keys() if c not in ("xmax", "lloyd-max")]:
        y = column(rows, name, src)
        lowest = min(lowest, min(y))
        ax.plot(x, y, label=name)
    if "lloyd-max" in rows[0]:
        ceiling = float(rows[0]["lloyd-max"])
        ax.axhline(ceiling, color="black", linestyle="--", label=f"Lloyd-Max ceiling {ceiling:.2f} dB")
    ax.set_ylim(bottom=max(lowest, -3.0))
    ax.set_title("SQNR_th against x_max, every two-bit design (unit Laplacian)")
    ax.set_xlabel("support threshold x_max (units of σ)")
    ax.set_ylabel("SQNR_th (dB)")
    ax.legend()
    save(fig, dst)


def histogram(src, dst):
    rows = read_csv(src)
    left, right = column(rows, "left", src), column(rows, "right", src)
    density = column(rows, "density", src)
    network = os.path.basename(src)[len("histogram-"):-len(".csv")].replace("-", " ")
    fig, ax = plt.subplots(figsize=SIZE)
    ax.stairs(density, left + [right[-1]], fill=True, alpha=0.5, color="tab:blue", label="normalised parameters")
    grid = [left[0] + (right[-1] - left[0]) * i / 800 for i in range(801)]
    ax.plot(grid, [math.exp(-math.sqrt(2) * abs(v)) / math.sqrt(2) for v in grid], color="black",
            label="unit Laplacian pdf")
    regions = src.replace(".csv", "-regions.csv")
    if os.path.exists(regions):
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"][1:]
        for i, r in enumerate(read_csv(regions)):
            xmax, colour = float(r["xmax"]), colours[i % len(colours)]
            ax.axvline(xmax, color=colour, linestyle="--", linewidth=1, label=f"{r['label']} ({xmax:.3f})")
            ax.axvline(-xmax, color=colour, linestyle="--", linewidth=1)
    ax.set_yscale("log")
    positive = [d for d in density if d > 0]
    ax.set_ylim(bottom=min(positive) / 2 if positive else 1e-6)
    ax.set_title(f"Normalised weights of the {network.upper().replace('FASHION', 'Fashion-MNIST')}")
    ax.set_xlabel("normalised weight (w − mean) / σ")
    ax.set_ylabel("density (log scale)")
    ax.legend(fontsize=8, loc="upper right")
    save(fig, dst)


def accuracy_vs_xmax(src, dst):
    rows = read_csv(src)
    networks = list(dict.fromkeys(r["network"] for r in rows))
    series_names = list(dict.fromkeys(r["series"] for r in rows))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {name: cycle[i % len(cycle)] for i, name in enumerate(series_names)}  # same colour in every panel
    fig, axes = plt.subplots(1, len(networks), figsize=(4.0 * len(networks) + 1.0, SIZE[1] + 0.6), squeeze=False)
    handles = {}
    for ax, network in zip(axes[0], networks):
        mine = [r for r in rows if r["network"] == network]
        fp32 = float(mine[0]["fp32_accuracy"])
        for name in dict.fromkeys(r["series"] for r in mine):
            points = sorted((float(r["xmax"]), float(r["accuracy"])) for r in mine if r["series"] == name)
            style = "--o" if "per-tensor" in name else ":s" if "per-channel" in name else "-o"
            (line,) = ax.plot(*zip(*points), style, markersize=4, color=colour[name])
            handles[name] = line
        paper = [(float(r["paper_xmax"]), float(r["paper_accuracy"])) for r in mine if r["paper_accuracy"]]
        if paper:
            (line,) = ax.plot(*zip(*paper), "x", color="black", markersize=7)
            handles["paper (at the paper's x_max)"] = line
        handles["FP32 (ours)"] = ax.axhline(fp32, color="black", linestyle="--", linewidth=1)
        # Collapsed quantizers (ternary at wide supports) would flatten the interesting band: clip
        # the axis and say how many points fall below it.
        bottom = max(min(float(r["accuracy"]) for r in mine) - 2, fp32 - 20)
        below = sum(float(r["accuracy"]) < bottom for r in mine)
        ax.set_ylim(bottom, fp32 + 1.5)
        ax.set_title(network + (f" ({below} points below the axis)" if below else ""), fontsize=10)
        ax.set_xlabel("x_max (units of σ)")
        ax.set_ylabel("test accuracy (%)")
    fig.suptitle("Accuracy of the quantized networks against x_max")
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(len(handles), 5))
    save(fig, dst, rect=(0, 0.12, 1, 1))  # room for the shared legend


def mismatch(src, dst):
    rows = read_csv(src)
    x = column(rows, "mismatch_db", src)
    rates = [c for c in rows[0].keys() if c.startswith("r") and not c.endswith("_approx")]
    fig, ax = plt.subplots(figsize=SIZE)
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(rates):
        colour = cmap(i / max(1, len(rates) - 1))
        ax.plot(x, column(rows, name, src), color=colour, label=f"R = {name[1:]}")
        if name + "_approx" in rows[0]:
            ax.plot(x, column(rows, name + "_approx", src), color=colour, linestyle=":", linewidth=1)
    ax.set_title("Uniform quantizer designed for σ_ref = 1 applied to Laplace(0, σ²)")
    ax.set_xlabel("variance mismatch 20 log10(σ / σ_ref) (dB)")
    ax.set_ylabel("SQNR (dB); dotted: high-rate approximation")
    ax.set_ylim(bottom=0)
    ax.legend(ncol=2, fontsize=8)
    save(fig, dst)


def loss_axis(ax, max_loss):
    """Losses span -0.05..10 points: linear around the bound, logarithmic above 0.1."""
    ax.set_yscale("symlog", linthresh=0.1, linscale=2.0)
    ticks = [-0.05, 0, max_loss, 0.05, 0.1, 1, 10]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}" for t in ticks])
    ax.set_ylim(bottom=-0.06)
    ax.minorticks_off()


def itc2021_rate(src, dst):
    """Companion paper: SQNR and accuracy loss against R, with and without normalisation, and the probe."""
    rows = read_csv(src)
    probe_path = src[:-4] + "-probe.csv"
    probe = read_csv(probe_path)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12.0, 4.4))
    styles = {"none": ("tab:red", "without normalisation"), "global": ("tab:blue", "with normalisation")}
    for name, (colour, label) in styles.items():
        part = [r for r in rows if r.get("normalisation") == name]
        if not part:
            continue
        bits = column(part, "bits", src, int)
        left.plot(bits, column(part, "sqnr_th_db", src), color=colour, label=f"{label}: SQNR_th")
        left.plot(bits, column(part, "sqnr_ex_db", src), "o", color=colour, markersize=4, label=f"{label}: SQNR_ex")
        loss = column(part, "loss", src)
        middle.plot(bits, loss, "-o", color=colour, markersize=3, label=label)
        for b, l, chosen in zip(bits, loss, column(part, "chosen", src, int)):
            if chosen:
                middle.plot([b], [l], "o", markersize=11, markerfacecolor="none", markeredgecolor=colour,
                            markeredgewidth=1.5)
                middle.annotate(f"rule: R = {b}", (b, l), textcoords="offset points", xytext=(6, 10), color=colour,
                                fontsize=8)
    max_loss = column(probe, "max_loss", probe_path)[0]
    left.set_title("SQNR against bit rate")
    left.set_xlabel("R (bits)")
    left.set_ylabel("SQNR (dB)")
    left.legend(fontsize=7)
    middle.axhline(max_loss, linestyle="--", color="gray", linewidth=1)
    middle.axhline(0, color="black", linewidth=0.8)
    loss_axis(middle, max_loss)
    middle.set_title("Accuracy loss against bit rate")
    middle.set_xlabel("R (bits)")
    middle.set_ylabel("FP32 − quantized accuracy (points)")
    middle.legend(fontsize=7)
    sqnr = column(probe, "sqnr_db", probe_path)
    right.plot(sqnr, column(probe, "mean_loss", probe_path), "-", color="black", label="mean over draws")
    right.plot(sqnr, column(probe, "worst_loss", probe_path), ".", color="gray", label="worst draw")
    right.axhline(max_loss, linestyle="--", color="gray", linewidth=1)
    for x, is_floor in zip(sqnr, column(probe, "floor", probe_path, float)):
        if is_floor:
            right.axvline(x, color="tab:green", linewidth=1)
            right.text(x, 0.98, f" floor {x:g} dB", color="tab:green", fontsize=8, va="top",
                       transform=right.get_xaxis_transform())
    loss_axis(right, max_loss)
    right.set_title("Noise probe on the FP32 weights")
    right.set_xlabel("SQNR of the noise (dB)")
    right.set_ylabel("accuracy loss (points)")
    right.legend(fontsize=7)
    save(fig, dst)


BENCH_NAME = re.compile(r"^(?P<family>[A-Za-z0-9_]+)/(?P<args>.*)$")


def bench_speedup(results_dir, dst):
    """Ratio of the FP32 peer's time to nuq's for the same (m, n, k); one line per bits and device."""
    series = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or "benchmarks" not in data:
            continue
        ours, peers = {}, {}
        for b in data["benchmarks"]:
            m = BENCH_NAME.match(b.get("run_name", b.get("name", "")))
            if not m or b.get("run_type", "iteration") != "iteration":
                continue
            args = dict(a.split(":", 1) for a in m["args"].split("/") if ":" in a)
            if not {"m", "n", "k"} <= args.keys():
                continue
            shape = (int(args["m"]), int(args["n"]), int(args["k"]))
            # Every repetition's time is kept; the ratio is taken between medians.
            if "Quantized" in m["family"]:
                variant = " (prepared)" if "Prepared" in m["family"] else ""
                ours.setdefault((shape, int(args.get("bits", 0)), variant), []).append(b["real_time"])
            else:
                peers.setdefault(shape, {}).setdefault(m["family"], []).append(b["real_time"])
        label = os.path.splitext(os.path.basename(path))[0]
        for (shape, bits, variant), times in ours.items():
            for peer, peer_times in peers.get(shape, {}).items():
                ratio = statistics.median(peer_times) / statistics.median(times)
                series.setdefault((label + variant, peer, bits), []).append((shape[0], ratio))
    if not series:
        return False
    fig, ax = plt.subplots(figsize=SIZE)
    for (label, peer, bits), points in sorted(series.items()):
        points.sort()
        ax.plot(*zip(*points), "-o", markersize=4, label=f"{label}: {bits}-bit vs {peer}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    for bits in sorted({b for (_, _, b) in series}):
        if bits:
            ax.axhline(32 / bits, linestyle="--", color="gray", linewidth=1)
            ax.text(0.01, 32 / bits, f" byte-ratio limit 32/{bits} = {32 / bits:g}×", fontsize=8, va="bottom",
                    transform=ax.get_yaxis_transform())
    ax.axhline(1, color="black", linewidth=0.8)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_title("Fused quantized GEMM: speed-up over the FP32 peer")
    ax.set_xlabel("batch m (rows of X)")
    ax.set_ylabel("peer time / nuq time")
    ax.legend(fontsize=7)
    save(fig, dst)
    return True


FIGURES = {
    "fig2-transfer": transfer,
    "fig5-convergence": convergence,
    "fig6-distortion": distortion,
    "sqnr-vs-xmax": sqnr_vs_xmax,
    "accuracy-vs-xmax": accuracy_vs_xmax,
    "mismatch-uniform": mismatch,
    "itc2021-rate": itc2021_rate,
}


def drawer_for(stem):
    if stem in FIGURES:
        return FIGURES[stem]
    if stem.startswith("histogram-") and not stem.endswith("-regions"):
        return histogram
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure_dir")
    parser.add_argument("--bench", help="folder of Google Benchmark JSON results")
    parser.add_argument("--only", nargs="*", help="render only these stems")
    args = parser.parse_args()
    if not os.path.isdir(args.figure_dir):
        print(f"plots.py: {args.figure_dir}: not a folder", file=sys.stderr)
        return 2
    failures = 0
    for src in sorted(glob.glob(os.path.join(args.figure_dir, "*.csv"))):
        stem = os.path.basename(src)[:-4]
        draw = drawer_for(stem)
        if draw is None or (args.only and stem not in args.only):
            continue
        try:
            draw(src, os.path.join(args.figure_dir, stem + ".png"))
            print(f"plots.py: {stem}.png")
        except DataError as e:
            print(f"plots.py: {e}", file=sys.stderr)
            failures += 1
    if args.bench and (not args.only or "bench-speedup" in args.only):
        if bench_speedup(args.bench, os.path.join(args.figure_dir, "bench-speedup.png")):
            print("plots.py: bench-speedup.png")
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
