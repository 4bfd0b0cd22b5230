#!/usr/bin/env bash
# train -> infer -> eval on SLURM, chained with --dependency=afterok (a failed stage cancels the rest).
#
#   slurm/pipeline.sh --model models/phi3-mini --train data/train.jsonl --test data/test.jsonl \
#       --out runs/phi3-qlora [--recipe train/recipes/<recipe>.yaml] [--wait] [-- --max_steps 100 ...]
#
# Options:
#   --model DIR        base model folder (safetensors)                                  (required)
#   --train FILE       training cases JSONL                                              (required)
#   --test FILE        held-out cases JSONL: inference input and evaluation gold        (required)
#   --out DIR          run folder: adapter/ preds.jsonl eval/metrics.json logs/         (required)
#   --recipe FILE      training recipe (default train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml)
#   --mode MODE        inference mode (default finetuned)
#   --bootstrap N      bootstrap resamples for the metrics' CIs (default: opclaim eval's)
#   --wait             block until the evaluation job ends; exit with its status
#   --doctor           first run `opclaim doctor` on the same partition (slurm/doctor.sbatch, report in
#                      OUT/doctor.json); training starts only if it passes (afterok)
#   -- ARGS            extra `--key value` overrides for the training recipe
# Variables (environment):
#   ACCEL_CONFIG, PROCS_PER_NODE, MAIN_PORT   see slurm/train.sbatch
#   BUNDLE_KEY, INFER_PROCS                    see slurm/infer.sbatch
#   INFER_ARGS     extra `opclaim infer` options, e.g. "--batch-size 8 --max-new-tokens 256"
#   EVAL_EXTRA     extra `opclaim eval` options, e.g. "--icd-ref lists/icd.txt"
#   SBATCH_ARGS    extra sbatch options for every job (e.g. "--partition=gpu --time=04:00:00")
#   OPCLAIM_ROOT, OPCLAIM_VENV                 see slurm/common.sh
# Prints one line: `train=JOBID infer=JOBID eval=JOBID` (`doctor=JOBID ` first with --doctor).
set -euo pipefail

OPCLAIM_ROOT="${OPCLAIM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# shellcheck source=slurm/common.sh
source "$OPCLAIM_ROOT/slurm/common.sh"

RECIPE="train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"
MODE="finetuned"
MODEL="" TRAIN="" TEST="" OUT="" BOOTSTRAP="" WAIT=0 DOCTOR=0
TRAIN_EXTRA=()
while (($#)); do
    case "$1" in
        --model) MODEL="${2:?--model needs a value}"; shift 2 ;;
        --train) TRAIN="${2:?--train needs a value}"; shift 2 ;;
        --test) TEST="${2:?--test needs a value}"; shift 2 ;;
        --out) OUT="${2:?--out needs a value}"; shift 2 ;;
        --recipe) RECIPE="${2:?--recipe needs a value}"; shift 2 ;;
        --mode) MODE="${2:?--mode needs a value}"; shift 2 ;;
        --bootstrap) BOOTSTRAP="${2:?--bootstrap needs a value}"; shift 2 ;;
        --wait) WAIT=1; shift ;;
        --doctor) DOCTOR=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; TRAIN_EXTRA=("$@"); break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# ---- check every input before asking SLURM for anything
abspath() { realpath -m -- "$1"; }
need_dir "base model (--model)" "$MODEL"
need_file "base model config" "$MODEL/config.json"
need_file "training cases (--train)" "$TRAIN"
need_file "test cases (--test)" "$TEST"
[[ -n "$OUT" ]] || die "--out not given"
( cd "$OPCLAIM_ROOT" && need_file "recipe (--recipe)" "$RECIPE" )
( cd "$OPCLAIM_ROOT" && need_file "accelerate config (ACCEL_CONFIG)" "${ACCEL_CONFIG:-ds_configs/zero3-cpu2.yaml}" )
[[ -z "${BUNDLE_KEY:-}" ]] || need_file "bundle key (BUNDLE_KEY)" "$BUNDLE_KEY"
command -v sbatch >/dev/null || die "sbatch not found: is this a SLURM login node?"
MODEL="$(abspath "$MODEL")" TRAIN="$(abspath "$TRAIN")" TEST="$(abspath "$TEST")" OUT="$(abspath "$OUT")"
[[ -z "${BUNDLE_KEY:-}" ]] || export BUNDLE_KEY="$(abspath "$BUNDLE_KEY")"
setup_env   # also cds to OPCLAIM_ROOT, the jobs' submit folder
mkdir -p "$OUT/logs"

# shellcheck disable=SC2086  # SBATCH_ARGS is a list of options
submit() { sbatch --parsable --kill-on-invalid-dep=yes ${SBATCH_ARGS:-} "$@"; }

TRAIN_DEP=() DOCTOR_LINE=""
if ((DOCTOR)); then
    DOCTOR_ID="$(submit --output="$OUT/logs/doctor-%j.out" slurm/doctor.sbatch "$RECIPE" "$MODEL" "$TRAIN" \
        "$OUT/doctor.json")"
    DOCTOR_ID="${DOCTOR_ID%%;*}"
    TRAIN_DEP=(--dependency="afterok:$DOCTOR_ID")
    DOCTOR_LINE="doctor=$DOCTOR_ID "
fi
TRAIN_ID="$(submit "${TRAIN_DEP[@]}" --output="$OUT/logs/train-%j.out" slurm/train.sbatch "$RECIPE" \
    --model_name_or_path "$MODEL" --train_file "$TRAIN" --output_dir "$OUT/adapter" "${TRAIN_EXTRA[@]}")"
TRAIN_ID="${TRAIN_ID%%;*}"

# shellcheck disable=SC2086  # INFER_ARGS is a list of options
INFER_ID="$(OPCLAIM_ADAPTER_FROM_JOB=1 submit --dependency="afterok:$TRAIN_ID" \
    --output="$OUT/logs/infer-%j.out" slurm/infer.sbatch \
    --model "$MODEL" --adapter "$OUT/adapter" --mode "$MODE" --cases "$TEST" --out "$OUT/preds.jsonl" ${INFER_ARGS:-})"
INFER_ID="${INFER_ID%%;*}"

EVAL_ARGS=(--predictions "$OUT/preds.jsonl" --gold "$TEST" --out "$OUT/eval")
[[ -z "$BOOTSTRAP" ]] || EVAL_ARGS+=(--bootstrap "$BOOTSTRAP")
# shellcheck disable=SC2206  # EVAL_EXTRA is a list of options
EVAL_ARGS+=(${EVAL_EXTRA:-})
WAIT_FLAG=()
((WAIT)) && WAIT_FLAG=(--wait)
rc=0
EVAL_ID="$(OPCLAIM_PREDICTIONS_FROM_JOB=1 CARD_MODEL="$OUT/adapter" submit "${WAIT_FLAG[@]}" \
    --dependency="afterok:$INFER_ID" --output="$OUT/logs/eval-%j.out" slurm/eval.sbatch "${EVAL_ARGS[@]}")" || rc=$?
EVAL_ID="${EVAL_ID%%;*}"
echo "${DOCTOR_LINE}train=$TRAIN_ID infer=$INFER_ID eval=${EVAL_ID:-?}"
if ((WAIT)); then
    if ((rc == 0)) && [[ -f "$OUT/eval/metrics.json" ]]; then
        log "done: $OUT/eval/metrics.json"
    else
        log "pipeline failed (eval job exit $rc); logs in $OUT/logs/"
        exit "$((rc == 0 ? 1 : rc))"
    fi
fi
