#!/usr/bin/env bash
# Measures `nuq quantize` on sharded BF16 checkpoints of several sizes against the goal of issue
# #18: peak RSS <= 1 GiB, a rate >= 70 % of the rate at which the same files are read (measured in
# the same run, just before), and a peak RSS that does not grow with the checkpoint (two sizes).
#
#   bench/checkpoint_scale.sh [options] NUQ WORKDIR SIZE_GB... [-- NUQ_QUANTIZE_OPTIONS...]
#
#   --per-shard        run nuq once per shard file (today's nuq takes one .safetensors and reads
#                      it whole): max RSS over the runs, total wall time
#   --input folder|index   what the single run is given (default folder; index needs > 1 shard)
#   --cold             evict the shards from the page cache before each nuq run (only these
#                      files: posix_fadvise), and hold nuq to the cold read rate
#   --shard-size S     shard limit for scripts/make-llm-checkpoint (e.g. 500MB; default its 2GB)
#   --seed N           generator seed (default 0)
#   --save             also write bench/results/cpu-checkpoint-scale-<date>.{json,md}
#                      (-per-shard and -cold added to the name with those options)
#   --clean            delete each checkpoint and output once measured (default: keep for reuse)
#
# Each size's checkpoint is WORKDIR/llm-<size>gb (reused when generated with the same options);
# the raw measurements go to WORKDIR/runs/<size>gb/ and the summary to WORKDIR/summary.{json,md}.
# Read rates are of the shards read in 16 MiB blocks, just before nuq: `cold`, one pass after
# evicting the files from the page cache, then `warm`, the passes after it (repeated for at least
# 1 s so that small checkpoints are timed too). nuq runs warm (the strictest reference: the goal's
# ratio is to the warm rate) unless --cold. Exit status 1 when a nuq run failed (the summary
# records it), 2 on a usage error.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3  # Debian's, with numpy (a pyenv python3 on PATH may lack it)
tool="$py $root/bench/checkpoint_scale.py"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
per_shard=0 input=folder cold=0 shard_size="" seed=0 save=0 clean=0
while [ $# -gt 0 ]; do
  case $1 in
    --per-shard) per_shard=1 ;;
    --input) input=${2:?}; shift ;;
    --cold) cold=1 ;;
    --shard-size) shard_size=${2:?}; shift ;;
    --seed) seed=${2:?}; shift ;;
    --save) save=1 ;;
    --clean) clean=1 ;;
    -h|--help) usage ;;
    --) break ;;
    -*) echo "checkpoint_scale: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
  shift
done
[ $# -ge 3 ] || usage
nuq=$(realpath "$1") work=$2; shift 2
sizes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do sizes+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the --
nuq_options=("$@")
case $input in folder|index) ;; *) echo "checkpoint_scale: --input folder or index" >&2; exit 2 ;; esac
[ -x "$nuq" ] || { echo "checkpoint_scale: $nuq is not an executable" >&2; exit 2; }
"$root/scripts/setup" time python3-numpy  # GNU time for peak RSS; numpy for the generator
mkdir -p "$work/runs"
work=$(realpath "$work")

# Generates (or reuses) the checkpoint of one size: the options are stamped in the folder once
# every file is written, so an interrupted or differently configured one is regenerated.
checkpoint() {  # size folder rundir
  local gen=("$root/scripts/make-llm-checkpoint" --size-gb "$1" --seed "$seed" --json)
  [ -n "$shard_size" ] && gen+=(--shard-size "$shard_size")
  local stamp="${gen[*]:1}"
  if [ -f "$2/.generated-with" ] && [ "$(cat "$2/.generated-with")" = "$stamp" ]; then
    echo "checkpoint_scale: reusing $2" >&2
    return
  fi
  rm -f "$2/.generated-with"
  echo "checkpoint_scale: generating $2 ($1 GB)" >&2
  /usr/bin/time -v -o "$3/generate.time" "${gen[@]}" -o "$2" --force >"$3/generate.json"
  echo "$stamp" >"$2/.generated-with"
}

# One nuq run under GNU time: its report, errors, resource use, and what it was given.
run_nuq() {  # index rundir out input shard-file...
  local i=$1 dir=$2 out=$3 given=$4; shift 4
  local status=0 start end
  [ "$cold" -eq 0 ] || $tool evict "$@"
  start=$(date +%s.%N)
  /usr/bin/time -v -o "$dir/nuq-$i.time" "$nuq" quantize "$given" -o "$out" --json "${nuq_options[@]}" \
    >"$dir/nuq-$i.out" 2>"$dir/nuq-$i.err" || status=$?
  end=$(date +%s.%N)
  $tool record "$dir" "$i" --status "$status" --start "$start" --end "$end" --given "$given" --output "$out" -- "$@"
  [ "$status" -eq 0 ] || echo "checkpoint_scale: nuq exited $status on $given: $(head -c 300 "$dir/nuq-$i.err")" >&2
  return "$status"
}

failed=0
for size in "${sizes[@]}"; do
  label=${size}gb
  ckpt=$work/llm-$label dir=$work/runs/$label out=$work/quantized-$label
  rm -rf "$dir" "$out"
  mkdir -p "$dir" "$out"
  checkpoint "$size" "$ckpt" "$dir"
  mapfile -t shards < <(cd "$ckpt" && ls model*.safetensors)
  paths=("${shards[@]/#/$ckpt/}")
  echo "checkpoint_scale: $label: reading ${#shards[@]} shard(s)" >&2
  $tool read-rate "${paths[@]}" >"$dir/read.json"
  if [ "$per_shard" -eq 1 ]; then
    mode=per-shard
    for i in "${!shards[@]}"; do
      echo "checkpoint_scale: $label: nuq on ${shards[$i]}" >&2
      run_nuq "$i" "$dir" "$out/${shards[$i]}" "${paths[$i]}" "${paths[$i]}" || { failed=1; break; }
    done
  else
    mode=$input
    target=$ckpt
    if [ "$input" = index ]; then
      target=$ckpt/model.safetensors.index.json
      [ -f "$target" ] || { echo "checkpoint_scale: $ckpt has one shard, no index (give --shard-size)" >&2; exit 2; }
    fi
    echo "checkpoint_scale: $label: nuq on $target" >&2
    rm -rf "$out"  # a folder output is nuq's to create
    run_nuq 0 "$dir" "$out" "$target" "${paths[@]}" || failed=1
  fi
  cache=warm
  if [ "$cold" -eq 1 ]; then
    cache=cold
    echo "checkpoint_scale: $label: reading the shards cold again" >&2
    $tool read-again "$dir/read.json" "${paths[@]}"
  fi
  printf '{"size_gb": %s, "mode": "%s", "cache": "%s", "checkpoint": "%s", "shards": %s}\n' "$size" "$mode" "$cache" "$ckpt" \
    "$($py -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${shards[@]}")" >"$dir/run.json"
  if [ "$clean" -eq 1 ]; then rm -rf "$ckpt" "$out"; fi
done

save_args=()
suffix=""
[ "$per_shard" -eq 1 ] && suffix=-per-shard
[ "$cold" -eq 1 ] && suffix=$suffix-cold
[ "$save" -eq 1 ] && save_args=(--save "$root/bench/results/cpu-checkpoint-scale$suffix-$(date +%Y-%m-%d)")
runs=()
for size in "${sizes[@]}"; do runs+=("$work/runs/${size}gb"); done
$tool summarize --nuq "$nuq" --options="${nuq_options[*]}" --out "$work/summary" "${save_args[@]}" -- "${runs[@]}"
exit "$failed"
