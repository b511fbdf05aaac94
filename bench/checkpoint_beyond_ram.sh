#!/usr/bin/env bash
# A checkpoint larger than the page cache, emulated: `nuq quantize` (cold; global normalisation by default)
# run inside a memory cgroup whose limit, page cache included, is below the checkpoint's size, and
# the bytes it reads from the disk counted (/proc/vmstat pgpgin). Two binaries alternated, e.g. the
# shards' order of pass 2 before and after a change. Needs root and the cgroup v1 memory controller.
# Options after -- go to `nuq quantize` (e.g. -- -m msptq --normalise per-channel --group-size 128).
#
#   bench/checkpoint_beyond_ram.sh NUQ_A NUQ_B CHECKPOINT [LIMIT_GIB (4)] [ROUNDS (2)] [-- OPTIONS...]
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2") checkpoint=$(realpath "$3") limit=4 rounds=2
shift 3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then limit=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then rounds=$1; shift; fi
[ $# -gt 0 ] && shift  # the --
options=("$@")
cg=/sys/fs/cgroup/memory/nuq-beyond-ram
[ -d /sys/fs/cgroup/memory ] || { echo "checkpoint_beyond_ram: no cgroup v1 memory controller" >&2; exit 2; }
mkdir -p "$cg"
echo $((limit * 1024 * 1024 * 1024)) >"$cg/memory.limit_in_bytes"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pgpgin() { awk '/^pgpgin/{print $2}' /proc/vmstat; }  # KiB read from block devices
printf '| run | binary | wall s | statistics s | quantizing s | read from disk GiB |\n|---|---|---:|---:|---:|---:|\n'
for round in $(seq "$rounds"); do
  for nuq in "$a" "$b"; do
    rm -rf "$out/q"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    before=$(pgpgin) start=$(date +%s.%N)
    bash -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' _ "$cg" "$nuq" quantize "$checkpoint" -o "$out/q" --json \
      "${options[@]}" >"$out/report.json"
    end=$(date +%s.%N) after=$(pgpgin)
    read -r stats quant < <(/usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['statistics_seconds'], r['quantize_seconds'])" "$out/report.json")
    printf '| %s | %s | %.2f | %.2f | %.2f | %.2f |\n' "$round" "$nuq" "$(echo "$end - $start" | bc)" "$stats" "$quant" \
      "$(echo "($after - $before) / 1048576" | bc -l)"
  done
done
sync
echo 3 >/proc/sys/vm/drop_caches
start=$(date +%s.%N)
cat "$checkpoint"/*.safetensors >/dev/null
end=$(date +%s.%N)
echo "cold read of the shards: $(echo "$end - $start" | bc) s, $(du -cb "$checkpoint"/*.safetensors | tail -n1 | cut -f1) bytes; cgroup limit $limit GiB"
