#!/usr/bin/env bash
# The whole method on one machine: data -> teacher -> PET student (warm-up + KD) -> the same
# student without KD -> BLEU / memory / speed of all three, side by side.
#
#   bash scripts/quickstart.sh                  # Multi30k de->en, CPU budgets, about 30 min on 2 cores
#   bash scripts/quickstart.sh --full           # the paper's settings (IWSLT-size models, long budgets): a GPU job
#   bash scripts/quickstart.sh --dataset iwslt14 --raw ~/de-en.tgz   # the paper's corpus, en->de
#
# Finished stages are reused when the script is run again (the trained teacher is cached in
# OUT/pet/teacher); --force starts from scratch. Budgets are in updates, so they do not depend
# on the machine; the CPU defaults were sized on 2 cores (see README for the measured times).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATASET=multi30k RAW="" OUT="$ROOT/runs/quickstart" FULL=0 FORCE=0 SRC="" TGT="" T_UPDATES=300 S_UPDATES=150
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) DATASET="$2"; shift 2 ;;
    --raw) RAW="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --src) SRC="$2"; shift 2 ;;
    --tgt) TGT="$2"; shift 2 ;;
    --full) FULL=1; shift ;;
    --teacher-updates) T_UPDATES="$2"; shift 2 ;;
    --student-updates) S_UPDATES="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
               echo "Options: --dataset multi30k|iwslt14  --raw PATH  --src L --tgt L  --out DIR (runs/quickstart)  --full  --force"
               echo "         --teacher-updates N (300)  --student-updates N (150 KD updates; the no-KD student gets warm-up + KD updates)"; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$DATASET" in
  multi30k) SRC="${SRC:-de}" TGT="${TGT:-en}" ;;
  iwslt14) SRC="${SRC:-en}" TGT="${TGT:-de}" ;;  # the PET paper's direction
  *) echo "error: --dataset must be multi30k or iwslt14, not '$DATASET'" >&2; exit 2 ;;
esac
START=$(date +%s)
say() { printf '\n[quickstart %s, %ds] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - START ))" "$*" >&2; }
[ "$FORCE" = 1 ] && rm -rf "$OUT"
mkdir -p "$OUT"

say "1/5 environment (scripts/install.sh)"
bash "$ROOT/scripts/install.sh"
BIN="${PET_VENV:-$ROOT/.venv}/bin"

DATA="$OUT/data"
if [ ! -f "$DATA/data-bin/dict.$SRC.txt" ]; then
  say "2/5 data: $DATASET $SRC->$TGT (data_prep/prepare-$DATASET.sh)"
  rm -rf "$DATA"
  bash "$ROOT/data_prep/prepare-$DATASET.sh" --src "$SRC" --tgt "$TGT" --out "$DATA" ${RAW:+--raw "$RAW"}
else
  say "2/5 data: reusing $DATA/data-bin"
fi

if [ "$FULL" = 1 ]; then
  # The paper's IWSLT'14 setup (GPU): transformer_iwslt_de_en teacher, pet_iwslt_de_en student.
  DEVICE=()
  TEACHER=(--teacher-arch transformer_iwslt_de_en --teacher-max-epoch 50 --teacher-args "--share-all-embeddings")
  STUDENT=(--student-arch pet_iwslt_de_en --warmup-epochs 3 --kd-max-epoch 50 --max-tokens 4096 --lr 5e-4 --warmup-updates 4000 --dropout 0.3)
  STUDENT_ARCH=pet_iwslt_de_en STUDENT_ARGS=""
  NOKD_BUDGET=(--max-epoch 53)
  EVAL=(--batch-size 64 --repeats 3)
else
  # CPU budgets (2 cores): a 3+3 half-width (256) pre-LN teacher, 300 updates. The student is PET's
  # student scaled to that teacher as the paper scales it to transformer_iwslt_de_en: 2 unique layers
  # run as 4 (0,1,0~,1~) per side, half the teacher's width (128, FFN 256), ~1/5 of its parameters.
  # PET: 1 warm-up epoch (126 updates) + 150 KD updates; the no-KD student gets as many in all.
  DEVICE=(--cpu)
  TEACHER=(--teacher-arch transformer --teacher-max-update "$T_UPDATES" --teacher-args
           "--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 \
            --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 \
            --decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before \
            --share-all-embeddings --lr 1.5e-3 --warmup-updates 150 --dropout 0.2")
  STUDENT_ARCH=pet_transformer
  STUDENT_ARGS="--encoder-layer-plan 0,1,0~,1~ --decoder-layer-plan 0,1,0~,1~ --encoder-embed-dim 128 \
    --decoder-embed-dim 128 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256 --encoder-attention-heads 4 \
    --decoder-attention-heads 4 --share-all-embeddings --encoder-normalize-before --decoder-normalize-before"
  STUDENT=(--student-arch "$STUDENT_ARCH" --warmup-epochs 1 --kd-max-update "$S_UPDATES" --max-tokens 4096 --lr 1.5e-3
           --warmup-updates 150 --dropout 0.2 --student-args "$STUDENT_ARGS"
           --kd-args "--encoder-layer-map 1:1,2:2,3:4 --decoder-layer-map 1:1,2:2,3:4 --inter-beta 5")
  NOKD_BUDGET=()  # set after the warm-up stage: warm-up updates + KD updates
  EVAL=(--batch-size 64 --repeats 3 --max-sentences 500 --max-len-a 1.2 --max-len-b 10)  # caps runaway outputs of weak students
fi

say "3/5 teacher, then the PET student: warm-up on simplified targets, then KD (scripts/train_pet.sh)"
bash "$ROOT/scripts/train_pet.sh" --data-bin "$DATA/data-bin" --out "$OUT/pet" "${DEVICE[@]}" "${TEACHER[@]}" "${STUDENT[@]}"

NOKD="$OUT/nokd"
if [ "$FULL" = 0 ]; then
  WARMUP_UPDATES="$(grep -o 'num_updates [0-9]*' "$OUT/pet/warmup/train.log" | tail -1 | cut -d' ' -f2)"
  NOKD_BUDGET=(--max-update "$(( ${WARMUP_UPDATES:-0} + S_UPDATES ))")
fi
if [ ! -f "$NOKD/.done" ]; then
  say "4/5 the same student without KD (label-smoothed cross-entropy, same number of updates)"
  mkdir -p "$NOKD"
  # shellcheck disable=SC2086
  "$BIN/fairseq-train" "$DATA/data-bin" --user-dir "$ROOT/pet_fairseq" --arch "$STUDENT_ARCH" $STUDENT_ARGS \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --optimizer adam --adam-betas "(0.9, 0.98)" \
    --lr "$([ "$FULL" = 1 ] && echo 5e-4 || echo 1.5e-3)" --lr-scheduler inverse_sqrt \
    --warmup-updates "$([ "$FULL" = 1 ] && echo 4000 || echo 150)" --warmup-init-lr 1e-07 --weight-decay 0.0001 \
    --dropout "$([ "$FULL" = 1 ] && echo 0.3 || echo 0.2)" --max-tokens 4096 "${NOKD_BUDGET[@]}" "${DEVICE[@]}" \
    --save-dir "$NOKD" --no-epoch-checkpoints --log-format simple --log-interval 25 2>&1 | tee "$NOKD/train.log"
  touch "$NOKD/.done"
else
  say "4/5 no-KD student: reusing $NOKD"
fi

say "5/5 BLEU, memory and decode speed, teacher first (scripts/evaluate.sh)"
if [ -f "$OUT/pet/teacher/checkpoint_last.pt" ]; then TEACHER_CKPT="$OUT/pet/teacher/checkpoint_last.pt"; fi
BPE=(--bpe subword_nmt --bpe-codes "$DATA/bpe/code")
[ -f "$DATA/bpe/code" ] || BPE=(--bpe sentencepiece --sentencepiece-model "$DATA/bpe/spm.model")
bash "$ROOT/scripts/evaluate.sh" --data-bin "$DATA/data-bin" --subset test "${BPE[@]}" "${EVAL[@]}" \
  --labels "teacher,PET (warm-up+KD),PET (no KD)" --out-dir "$OUT/compare" \
  "$TEACHER_CKPT" "$OUT/pet/kd/checkpoint_last.pt" "$NOKD/checkpoint_last.pt"

"$BIN/python" - "$OUT/compare/report.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["models"]
bleu = {r["label"]: r["bleu"]["detok"] for r in rows if r["status"] == "ok"}
teacher, kd, nokd = (bleu.get(k) for k in ("teacher", "PET (warm-up+KD)", "PET (no KD)"))
if None in (teacher, kd, nokd):
    sys.exit("warning: a model failed; see the table above")
print(f"\nBLEU: teacher {teacher:.1f}, PET with warm-up + KD {kd:.1f}, the same student without KD {nokd:.1f} "
      f"(KD: {kd - nokd:+.1f})")
if teacher < nokd + 1.0:
    print(f"WARNING: the teacher does not beat the student trained without KD by at least 1 BLEU, so KD "
          "has little to transfer. Train the teacher longer (--teacher-updates) or pass a better one to "
          "scripts/train_pet.sh --teacher.")
PY
echo; echo "Training step time (train_wall / updates), from the logs of this run:"
"$BIN/python" -m pet_fairseq.evaluation.training_cost "plain CE (no KD)=$NOKD/train.log" \
  "warm-up=$OUT/pet/warmup/train.log" "KD=$OUT/pet/kd/train.log"
say "done: table in $OUT/compare/report.md, figures in report.json / report.png"
