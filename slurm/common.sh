# Shared helpers for slurm/*.sbatch and slurm/pipeline.sh (sourced, not run).
#
# Variables every script honours:
#   OPCLAIM_ROOT   the opclaim checkout (default: the folder holding slurm/)
#   OPCLAIM_VENV   its Python environment (default: $OPCLAIM_ROOT/.venv); its bin/ goes first on PATH

die() { echo "$(basename "${0}"): error: $*" >&2; exit 2; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

need_file() {  # need_file WHAT PATH
    [[ -n "${2:-}" ]] || die "$1 not given"
    [[ -f "$2" ]] || die "$1 not found: $2"
}

need_dir() {  # need_dir WHAT PATH
    [[ -n "${2:-}" ]] || die "$1 not given"
    [[ -d "$2" ]] || die "$1 not found: $2"
}

# arg_value KEY ARGS... -> the value of --KEY in ARGS (--KEY v or --KEY=v; an underscore KEY also
# matches its dash spelling, as the training parser does); empty if absent.
arg_value() {
    local key="$1" dashed="${1//_/-}"; shift
    while (($#)); do
        case "$1" in
            "--$key"|"--$dashed") echo "${2:-}"; return 0 ;;
            "--$key="*|"--$dashed="*) echo "${1#*=}"; return 0 ;;
        esac
        shift
    done
    return 0
}

# yaml_value FILE KEY -> a top-level scalar of a flat YAML recipe (quotes stripped); empty if absent.
yaml_value() {
    sed -n -E "s/^$2:[[:space:]]*(.*)$/\1/p" "$1" | head -n1 | sed -E 's/[[:space:]]+#.*$//; s/^["'"'"']//; s/["'"'"']$//'
}

# train_finished DIR -> 0 when DIR holds a finished training run's record (opclaim_run.json, read
# by opclaim/artifacts.py: a record of a newer or unknown schema stops the script), 1 when none.
train_finished() {
    local rc=0
    python -m opclaim.artifacts train-finished "$1" || rc=$?
    ((rc != 2)) || die "unusable training run record in $1 (see above)"
    return "$rc"
}

setup_env() {
    OPCLAIM_VENV="${OPCLAIM_VENV:-$OPCLAIM_ROOT/.venv}"
    [[ -x "$OPCLAIM_VENV/bin/python" ]] || die "no Python environment at $OPCLAIM_VENV (run \`make setup\`)"
    export PATH="$OPCLAIM_VENV/bin:$PATH" OPCLAIM_ROOT OPCLAIM_VENV
    # Offline always: compute nodes in an enclave have no route out, and must not try.
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
    cd "$OPCLAIM_ROOT"
}

# When a .sbatch file is run with bash instead of sbatch: check inputs first, then submit itself,
# so a typo fails in a second instead of after waiting in the queue for nodes.
submit_self_unless_in_job() {  # submit_self_unless_in_job SCRIPT ARGS...
    if [[ -z "${SLURM_JOB_ID:-}" ]]; then
        local script="$1"; shift
        log "inputs OK; submitting"
        exec sbatch ${SBATCH_ARGS:-} "$script" "$@"
    fi
}
