#!/usr/bin/env bash
# Runs a kdjax experiment on one or more GPU machines reached over ssh.
#
#   launch/gpu.sh --hosts user@gpu1[,user@gpu2,...] [--port 12355] [--cuda 12] \
#       [--remote-dir kdjax] [--dry-run] \
#       -- --config=experiments/kd_cifar100.py --workdir=runs/kd_cifar100
#
# Steps: copy this checkout to every host (rsync, without .venv and runs/), create
# .venv there and install requirements.txt plus jax[cudaNN], run `python -m launch.main`
# (one process per host; with several hosts each gets --coordinator_address=<first
# host>:PORT --num_processes=N --process_id=i and all start together), then copy the
# workdir back from the first host. --dry-run prints the commands instead of running them.
set -euo pipefail

script=gpu.sh
source "$(dirname "$0")/common.sh"

hosts="" port=12355 cuda=12 remote_dir="kdjax" dry_run=0
while (($#)); do
  case "$1" in
    --hosts) hosts="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --cuda) cuda="$2"; shift 2 ;;
    --remote-dir) remote_dir="$2"; shift 2 ;;
    --) shift; break ;;
    *) common_option "$1"; shift ;;
  esac
done
job_args=("$@")
[[ -n "$hosts" ]] || { echo "gpu.sh: missing required option --hosts" >&2; usage; }
parse_job_args "$remote_dir"
IFS=, read -r -a host_list <<<"$hosts"
num_hosts=${#host_list[@]}
coordinator="${host_list[0]#*@}:$port"

checkout="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"

for host in "${host_list[@]}"; do
  run rsync -a --delete --exclude .venv --exclude runs --exclude .git "$checkout/" "$host:$remote_dir/"
  run ssh "$host" "cd $remote_dir && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[cuda$cuda]'"
done
pids=()
for i in "${!host_list[@]}"; do
  multi=""
  ((num_hosts > 1)) && multi=" --coordinator_address=$coordinator --num_processes=$num_hosts --process_id=$i"
  command="cd $remote_dir && .venv/bin/python -m launch.main$multi$job"
  if ((dry_run)); then
    run ssh "${host_list[$i]}" "$command"
  else
    run ssh "${host_list[$i]}" "$command" & pids+=($!)
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
run mkdir -p "$(dirname "$workdir")"
run rsync -a "${host_list[0]}:$remote_workdir" "$(dirname "$workdir")/"
