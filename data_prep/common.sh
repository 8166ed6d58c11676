#!/usr/bin/env bash
# Shared driver of data_prep/prepare-*.sh (sourced, not run). The text steps live in tested
# Python (python -m pet_fairseq.preprocessing); this file only picks the interpreter, forwards
# the arguments, runs fairseq-preprocess, writes the data-bin's preprocessing recipe
# (OUT/data-bin/preprocessing.json + the subword model) and prints the summary.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Python: the project's environment, $PET_VENV (default: the repository's .venv), as in scripts/.
ROOT="$REPO_ROOT"
. "$REPO_ROOT/scripts/lib/env.sh"
require_env

# fairseq-preprocess next to that Python, else on PATH, else as a module.
if [[ -x "$(dirname "$PY")/fairseq-preprocess" ]]; then
    FAIRSEQ_PREPROCESS=("$(dirname "$PY")/fairseq-preprocess")
elif command -v fairseq-preprocess >/dev/null 2>&1; then
    FAIRSEQ_PREPROCESS=(fairseq-preprocess)
else
    FAIRSEQ_PREPROCESS=("$PY" -m fairseq_cli.preprocess)
fi

# run_prepare DATASET DEFAULT_SRC DEFAULT_TGT ARGS...
run_prepare() {
    local dataset="$1" src="$2" tgt="$3" out="" workers=2
    shift 3
    local args=("$@")
    while [[ $# -gt 0 ]]; do
        case "$1" in
            -h|--help)
                "$PY" -m pet_fairseq.preprocessing "$dataset" --help
                echo
                echo "From data_prep/prepare-$dataset.sh: --out defaults to data-bin/$dataset.SRC-TGT; after the"
                echo "text steps, fairseq-preprocess --joined-dictionary writes OUT/data-bin (log: OUT/fairseq-preprocess.log),"
                echo "then OUT/data-bin/preprocessing.json records the recipe (read by python -m pet_fairseq.translate)."
                echo "Environment: PET_VENV=/path/to/venv picks the environment (default: the repository's .venv), as in scripts/."
                exit 0 ;;
            --src) src="${2:-}"; shift 2 || shift ;;
            --src=*) src="${1#*=}"; shift ;;
            --tgt) tgt="${2:-}"; shift 2 || shift ;;
            --tgt=*) tgt="${1#*=}"; shift ;;
            --out) out="${2:-}"; shift 2 || shift ;;
            --out=*) out="${1#*=}"; shift ;;
            --workers) workers="${2:-}"; shift 2 || shift ;;
            --workers=*) workers="${1#*=}"; shift ;;
            *) shift ;;
        esac
    done
    out="${out:-data-bin/$dataset.$src-$tgt}"

    echo "== [1/3] text steps: python -m pet_fairseq.preprocessing $dataset"
    "$PY" -m pet_fairseq.preprocessing "$dataset" "${args[@]}" \
        --src "$src" --tgt "$tgt" --out "$out" --workers "$workers"

    echo "== [2/3] binarize: fairseq-preprocess --joined-dictionary -> $out/data-bin"
    "${FAIRSEQ_PREPROCESS[@]}" --source-lang "$src" --target-lang "$tgt" \
        --trainpref "$out/bpe/train" --validpref "$out/bpe/valid" --testpref "$out/bpe/test" \
        --destdir "$out/data-bin" --joined-dictionary --workers "$workers" \
        > "$out/fairseq-preprocess.log" 2>&1 || {
            echo "error: fairseq-preprocess failed; its output:" >&2
            cat "$out/fairseq-preprocess.log" >&2
            exit 1
        }

    echo "== [3/3] recipe (how to prepare new text: python -m pet_fairseq.translate reads it) and summary"
    "$PY" -m pet_fairseq.preprocessing recipe "$out"
    "$PY" -m pet_fairseq.preprocessing summary "$out"
}
