# Shared by launch/tpu_vm.sh and launch/gpu.sh (sourced, not run). Expects `script`,
# `dry_run` and the launcher arguments after `--` in `job_args`.

usage() {  # Prints the comment block at the top of the calling script.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-2}"
}

# The options both launchers take (--dry-run, -h/--help); any other is refused. The
# caller shifts the word.
common_option() {
  case "$1" in
    --dry-run) dry_run=1 ;;
    -h|--help) usage 0 ;;
    *) echo "$script: unknown option $1" >&2; usage ;;
  esac
}

# Sets `config` (file part of --config=FILE[:arg]), `workdir`, `remote_workdir` (under
# $1 unless absolute) and `job` (the arguments quoted for a remote shell); checks them.
parse_job_args() {
  config="" workdir=""
  for arg in "${job_args[@]}"; do
    case "$arg" in
      --config=*) config="${arg#--config=}"; config="${config%%:*}" ;;
      --workdir=*) workdir="${arg#--workdir=}" ;;
    esac
  done
  if [[ -z "$workdir" || -z "$config" ]]; then
    echo "$script: after -- give the launcher's --config=... and --workdir=..." >&2; usage
  fi
  [[ -f "$config" ]] || { echo "$script: config file $config does not exist" >&2; exit 2; }
  remote_workdir="$workdir"
  [[ "$workdir" == /* ]] || remote_workdir="$1/$workdir"
  job=$(printf ' %q' "${job_args[@]}")
}

run() {  # Prints the command; runs it unless --dry-run.
  printf '+'; printf ' %q' "$@"; printf '\n'
  ((dry_run)) || "$@"
}
