#!/usr/bin/env bash
# PET recipe on a binarized dataset: teacher -> warm-up on simplified targets -> KD.
#
#   bash scripts/train_pet.sh --data-bin DIR --out DIR [--teacher CKPT] [options]
#
# Stages (each is a real fairseq-train run; a stage whose final checkpoint exists is reused,
# so an interrupted run resumes and a trained teacher is cached):
#   1. teacher   --teacher-arch (transformer_iwslt_de_en), unless --teacher CKPT is given
#   2. warm-up   --task pet_warmup --criterion pet_warmup, --warmup-epochs (3) epochs
#   3. KD        --task pet_distillation --criterion pet_kd, from the warm-up checkpoint
#                (--finetune-from-model), --kd-max-update / --kd-max-epoch
# Defaults are the paper's IWSLT'14 optimiser settings (Adam 0.9/0.98, lr 5e-4, inverse_sqrt
# with 4000 warm-up updates, dropout 0.3, weight decay 1e-4, label smoothing 0.1, 4096 tokens).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${PET_VENV:-$ROOT/.venv}/bin"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; cat <<'EOT'
Options:
  --data-bin DIR         binarized data (fairseq-preprocess output)            [required]
  --out DIR              where teacher/, warmup/ and kd/ checkpoints go        [required]
  --teacher CKPT         use this trained teacher instead of training one
  --teacher-arch A       architecture of a teacher trained here (transformer_iwslt_de_en)
  --student-arch A       student architecture (pet_iwslt_de_en)
  --teacher-max-update N / --teacher-max-epoch N   teacher budget (default: 50 epochs)
  --warmup-epochs N      warm-up epochs (3)
  --kd-max-update N / --kd-max-epoch N             KD budget (default: 50 epochs)
  --max-tokens N (4096)  --lr X (5e-4)  --warmup-updates N (4000)  --dropout X (0.3)
  --teacher-args "..."   extra fairseq-train arguments for the teacher stage
  --student-args "..."   extra fairseq-train arguments for both student stages (e.g. layer plans)
  --warmup-args "..."    extra arguments for the warm-up stage (e.g. --confidence-threshold 0.7)
  --kd-args "..."        extra arguments for the KD stage (e.g. --encoder-layer-map 1:1,2:2)
  --cpu                  train on CPU
EOT
}

DATA="" OUT="" TEACHER="" TEACHER_ARCH=transformer_iwslt_de_en STUDENT_ARCH=pet_iwslt_de_en
TEACHER_BUDGET=(--max-epoch 50) WARMUP_EPOCHS=3 KD_BUDGET=(--max-epoch 50)
MAX_TOKENS=4096 LR=5e-4 WARMUP_UPDATES=4000 DROPOUT=0.3
TEACHER_ARGS="" STUDENT_ARGS="" WARMUP_ARGS="" KD_ARGS="" CPU=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data-bin) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --teacher) TEACHER="$2"; shift 2 ;;
    --teacher-arch) TEACHER_ARCH="$2"; shift 2 ;;
    --student-arch) STUDENT_ARCH="$2"; shift 2 ;;
    --teacher-max-update) TEACHER_BUDGET=(--max-update "$2"); shift 2 ;;
    --teacher-max-epoch) TEACHER_BUDGET=(--max-epoch "$2"); shift 2 ;;
    --warmup-epochs) WARMUP_EPOCHS="$2"; shift 2 ;;
    --kd-max-update) KD_BUDGET=(--max-update "$2"); shift 2 ;;
    --kd-max-epoch) KD_BUDGET=(--max-epoch "$2"); shift 2 ;;
    --max-tokens) MAX_TOKENS="$2"; shift 2 ;;
    --lr) LR="$2"; shift 2 ;;
    --warmup-updates) WARMUP_UPDATES="$2"; shift 2 ;;
    --dropout) DROPOUT="$2"; shift 2 ;;
    --teacher-args) TEACHER_ARGS="$2"; shift 2 ;;
    --student-args) STUDENT_ARGS="$2"; shift 2 ;;
    --warmup-args) WARMUP_ARGS="$2"; shift 2 ;;
    --kd-args) KD_ARGS="$2"; shift 2 ;;
    --cpu) CPU=(--cpu); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$DATA" ] && [ -n "$OUT" ] || { echo "error: --data-bin and --out are required (see --help)" >&2; exit 2; }
[ -d "$DATA" ] || { echo "error: --data-bin $DATA is not a folder; binarize your data first (bash data_prep/prepare-<dataset>.sh)" >&2; exit 2; }
[ -x "$BIN/fairseq-train" ] || { echo "error: $BIN/fairseq-train not found; run: bash scripts/install.sh" >&2; exit 2; }
if [ -n "$TEACHER" ] && [ ! -f "$TEACHER" ]; then echo "error: --teacher $TEACHER does not exist" >&2; exit 2; fi
USER_DIR="$ROOT/pet_fairseq"

OPTIM=(--optimizer adam --adam-betas "(0.9, 0.98)" --lr "$LR" --lr-scheduler inverse_sqrt
       --warmup-updates "$WARMUP_UPDATES" --warmup-init-lr 1e-07 --weight-decay 0.0001 --clip-norm 0.0
       --dropout "$DROPOUT" --max-tokens "$MAX_TOKENS" --log-format simple --log-interval 20
       --no-epoch-checkpoints "${CPU[@]}")

stage() {  # stage NAME SAVE_DIR DONE_FILE -- fairseq-train args...
  local name="$1" dir="$2" done="$3"; shift 4
  if [ -f "$done" ]; then echo "[train_pet] $name: reusing $done" >&2; return; fi
  echo "[train_pet] $name -> $dir" >&2
  mkdir -p "$dir"
  "$BIN/fairseq-train" "$DATA" --save-dir "$dir" "$@" 2>&1 | tee -a "$dir/train.log"
  [ -f "$dir/checkpoint_last.pt" ] || { echo "error: $name produced no checkpoint (see $dir/train.log)" >&2; exit 1; }
  touch "$done"
}

if [ -z "$TEACHER" ]; then
  # shellcheck disable=SC2086
  stage teacher "$OUT/teacher" "$OUT/teacher/.done" -- --arch "$TEACHER_ARCH" "${OPTIM[@]}" "${TEACHER_BUDGET[@]}" \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --user-dir "$USER_DIR" $TEACHER_ARGS
  TEACHER="$OUT/teacher/checkpoint_best.pt"
fi
# shellcheck disable=SC2086
stage warm-up "$OUT/warmup" "$OUT/warmup/.done" -- --user-dir "$USER_DIR" --task pet_warmup --teacher-path "$TEACHER" \
  --criterion pet_warmup --arch "$STUDENT_ARCH" "${OPTIM[@]}" --max-epoch "$WARMUP_EPOCHS" $STUDENT_ARGS $WARMUP_ARGS
# shellcheck disable=SC2086
stage KD "$OUT/kd" "$OUT/kd/.done" -- --user-dir "$USER_DIR" --task pet_distillation --teacher-path "$TEACHER" \
  --criterion pet_kd --arch "$STUDENT_ARCH" --finetune-from-model "$OUT/warmup/checkpoint_last.pt" \
  "${OPTIM[@]}" "${KD_BUDGET[@]}" $STUDENT_ARGS $KD_ARGS
echo "[train_pet] teacher: $TEACHER" >&2
echo "[train_pet] student: $OUT/kd/checkpoint_best.pt" >&2
