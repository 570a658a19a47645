#!/usr/bin/env bash
# Runs a kdjax experiment on a Cloud TPU VM (every worker of a pod slice).
#
#   launch/tpu_vm.sh --name kd1 --zone us-central2-b --accelerator v4-8 \
#       [--project P] [--version tpu-ubuntu2204-base] [--spot] [--keep] [--dry-run] \
#       -- --config=experiments/kd_cifar100.py --workdir=runs/kd_cifar100
#
# Steps: create the TPU VM (skipped if it exists), copy this checkout's HEAD (git
# archive: committed code only) to every worker, install requirements.txt plus jax[tpu], run `python -m launch.main --distributed ...`
# on all workers at once (jax.distributed.initialize() finds its peers on TPU VMs),
# copy the workdir back from worker 0, and delete the VM unless --keep is given.
# --dry-run prints the gcloud commands instead of running them.
#
# Multi-host slices (v4-16 and up): every worker writes checkpoints, so give a workdir
# all workers share (a mounted bucket or NFS path); worker 0's copy is what is fetched.
set -euo pipefail

script=tpu_vm.sh
source "$(dirname "$0")/common.sh"

name="" zone="" accelerator="" project="" version="tpu-ubuntu2204-base"
spot=0 keep=0 dry_run=0
while (($#)); do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --accelerator) accelerator="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --keep) keep=1; shift ;;
    --) shift; break ;;
    *) common_option "$1"; shift ;;
  esac
done
job_args=("$@")

missing=()
[[ -n "$name" ]] || missing+=(--name)
[[ -n "$zone" ]] || missing+=(--zone)
[[ -n "$accelerator" ]] || missing+=(--accelerator)
if ((${#missing[@]})); then
  echo "tpu_vm.sh: missing required option(s): ${missing[*]}" >&2; usage
fi


gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[[ -n "$project" ]] && where+=(--project="$project")
remote_dir="kdjax"
parse_job_args "$remote_dir"

if ((dry_run)) || ! "${gcloud_tpu[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
  create=("${gcloud_tpu[@]}" create "$name" "${where[@]}"
          --accelerator-type="$accelerator" --version="$version")
  ((spot)) && create+=(--spot)
  run "${create[@]}"
fi
archive="${TMPDIR:-/tmp}/kdjax-$name.tar.gz"
run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
run "${gcloud_tpu[@]}" scp --worker=all "${where[@]}" "$archive" "$name:kdjax.tar.gz"
run "${gcloud_tpu[@]}" ssh "$name" --worker=all "${where[@]}" --command \
  "mkdir -p $remote_dir && tar -xzf kdjax.tar.gz -C $remote_dir && cd $remote_dir && python3 -m pip install -q -r requirements.txt 'jax[tpu]'"
run "${gcloud_tpu[@]}" ssh "$name" --worker=all "${where[@]}" --command \
  "cd $remote_dir && python3 -m launch.main --distributed$job"
run mkdir -p "$(dirname "$workdir")"
run "${gcloud_tpu[@]}" scp --recurse --worker=0 "${where[@]}" \
  "$name:$remote_workdir" "$(dirname "$workdir")/"
((keep)) || run "${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet
