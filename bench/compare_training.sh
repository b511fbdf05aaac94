#!/usr/bin/env bash
# nuq's CPU trainer against the same MLP training written in numpy (bench/train_numpy.py), both
# on OpenBLAS, run one after the other on this machine. Writes bench/results/cpu-training-<date>.md.
#   bench/compare_training.sh [EPOCHS]      (needs a build and scripts/fetch-data)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
epochs=${1:-10}
data=${NUQ_DATA:-$root/data}
dpkg-query -W -f='${Status}' python3-numpy 2>/dev/null | grep -q "install ok installed" ||
  { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-numpy >/dev/null; }
"$root/scripts/fetch-data" "$data"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nuq_json=$("$root/build/nuq" train --dataset mnist --model mlp --epochs "$epochs" --data "$data" -o "$tmp/m.safetensors" --json 2>/dev/null)
numpy_json=$(/usr/bin/python3 "$root/bench/train_numpy.py" "$data/mnist" "$epochs")
python3 - "$nuq_json" "$numpy_json" "$epochs" <<'PY' | tee "$root/bench/results/cpu-training-$(date +%Y-%m-%d).md"
import json, sys
nuq, peer, epochs = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
nuq_s = sum(e["seconds"] for e in nuq["epochs"])
print(f"# MNIST MLP training on the CPU, {epochs} epochs (batch 128, Adam, dropout 0.2)\n")
print("| trainer | seconds | s/epoch | test accuracy % |\n|---|---:|---:|---:|")
print(f"| nuq train | {nuq_s:.1f} | {nuq_s / epochs:.2f} | {nuq['test_accuracy']:.2f} |")
print(f"| numpy + OpenBLAS | {peer['seconds']:.1f} | {peer['seconds_per_epoch']:.2f} | {peer['test_accuracy']:.2f} |")
print(f"\nnuq takes {nuq_s / peer['seconds']:.2f}x the time of the numpy peer (below 1 is faster).")
PY
