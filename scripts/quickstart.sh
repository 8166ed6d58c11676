#!/usr/bin/env bash
# The whole method on one machine: data -> teacher -> sequence-level KD corpus -> the PET student
# distilled with the project's recipe, and the same student trained without the teacher for the
# same number of updates -> BLEU, memory and decode speed of all three, side by side.
#
#   bash scripts/quickstart.sh                  # Multi30k de->en, CPU budgets (see README for the measured time)
#   bash scripts/quickstart.sh --full           # the paper's sizes and budgets (IWSLT-size models): a GPU job
#   bash scripts/quickstart.sh --dataset iwslt14 --raw ~/de-en.tgz   # the paper's corpus, en->de
#
# Finished stages are reused when the script is run again (teacher in OUT/pet/teacher, students
# and corpus in OUT/study); --force starts from scratch. The console shows stages, progress and
# the tables; fairseq's logs are files under OUT (each stage names its log).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATASET=multi30k RAW="" OUT="$ROOT/runs/quickstart" FULL=0 FORCE=0 SRC="" TGT="" T_UPDATES=300
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) DATASET="$2"; shift 2 ;;
    --raw) RAW="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --src) SRC="$2"; shift 2 ;;
    --tgt) TGT="$2"; shift 2 ;;
    --full) FULL=1; shift ;;
    --teacher-updates) T_UPDATES="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
               echo "Options: --dataset multi30k|iwslt14  --raw PATH  --src L --tgt L  --out DIR (runs/quickstart)  --full  --force"
               echo "         --teacher-updates N (300; the students' budget is the study spec's, configs/study/)"; exit 0 ;;
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

say "1/5 environment (scripts/install.sh; log: $OUT/install.log)"
bash "$ROOT/scripts/install.sh" > "$OUT/install.log" 2>&1 || { tail -n 20 "$OUT/install.log" >&2; exit 1; }
BIN="${PET_VENV:-$ROOT/.venv}/bin"

DATA="$OUT/data"
if [ ! -f "$DATA/data-bin/dict.$SRC.txt" ]; then
  say "2/5 data: $DATASET $SRC->$TGT (data_prep/prepare-$DATASET.sh; log: $OUT/prepare.log)"
  rm -rf "$DATA"
  bash "$ROOT/data_prep/prepare-$DATASET.sh" --src "$SRC" --tgt "$TGT" --out "$DATA" ${RAW:+--raw "$RAW"} \
    > "$OUT/prepare.log" 2>&1 || { tail -n 20 "$OUT/prepare.log" >&2; exit 1; }
else
  say "2/5 data: reusing $DATA/data-bin"
fi

if [ "$FULL" = 1 ]; then
  # The paper's IWSLT'14 setup (GPU): transformer_iwslt_de_en teacher, pet_iwslt_de_en students.
  TEACHER=(--teacher-arch transformer_iwslt_de_en --teacher-max-epoch 50 --teacher-args "--share-all-embeddings")
  SPEC="$ROOT/configs/study/iwslt14-full.json" JOBS=(--jobs 1)
  EVAL="--subset test --beam 5 --batch-size 64 --repeats 3"
else
  # CPU budgets (2 cores): a 3+3 half-width (256) pre-LN teacher, 300 updates. The students (configs/study/
  # multi30k.json) are PET's student scaled to that teacher as the paper scales it to transformer_iwslt_de_en:
  # 2 unique layers run as 4 (0,1,0~,1~) per side, width 128, ~1/5 of the teacher's parameters.
  TEACHER=(--cpu --teacher-arch transformer --teacher-max-update "$T_UPDATES" --teacher-args
           "--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 \
            --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 \
            --decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before \
            --share-all-embeddings --lr 1.5e-3 --warmup-updates 150 --dropout 0.2")
  SPEC="$ROOT/configs/study/multi30k.json" JOBS=(--jobs 2 --threads 1)  # both students at once, a core each
  EVAL="--subset test --beam 5 --batch-size 64 --repeats 1 --max-sentences 500 --max-len-a 1.2 --max-len-b 10"
fi

say "3/5 teacher (scripts/train_pet.sh --teacher-only)"
bash "$ROOT/scripts/train_pet.sh" --data-bin "$DATA/data-bin" --out "$OUT/pet" --source-lang "$SRC" --target-lang "$TGT" \
  --teacher-only "${TEACHER[@]}"
TEACHER_CKPT="$OUT/pet/teacher/checkpoint_last.pt"

BPE=(--bpe subword_nmt --bpe-codes "$DATA/bpe/code")
[ -f "$DATA/bpe/code" ] || BPE=(--bpe sentencepiece --sentencepiece-model "$DATA/bpe/spm.model")
STUDY=("$BIN/python" -m pet_fairseq.study --spec "$SPEC" --only no-kd,seqkd-wordkd-inter --tag quickstart
       --data-bin "$DATA/data-bin" --teacher "$TEACHER_CKPT" --out "$OUT/study" --source-lang "$SRC" --target-lang "$TGT")
say "4/5 seq-KD corpus, then the PET student with the recipe (seq-KD + word KD + intermediate loss) and without KD, equal updates (python -m pet_fairseq.study; logs under $OUT/study)"
"${STUDY[@]}" "${JOBS[@]}" --train-only
say "5/5 BLEU, memory and decode speed, teacher first (evaluation tool; log: $OUT/study/eval-quickstart.log)"
"${STUDY[@]}" "${BPE[@]}" --eval-args "$EVAL"
echo >&2
cat "$OUT/study/eval-quickstart/report.md" >&2

"$BIN/python" - "$OUT/study/study-quickstart.json" <<'PY'
import json, sys
study = json.load(open(sys.argv[1]))
rows = {r["variant"]["name"]: r for r in study["rows"]}
teacher, kd, nokd = study["teacher"]["detok"], rows["seqkd-wordkd-inter"]["bleu"], rows["no-kd"]["bleu"]
print(f"\nBLEU after {study['budget']} student updates each: teacher {teacher:.2f}, distilled PET student {kd:.2f} "
      f"({kd - teacher:+.2f} vs the teacher), the same student without KD {nokd:.2f} (KD: {kd - nokd:+.2f})")
if teacher < nokd + 1.0:
    print("WARNING: the teacher does not beat the student trained without KD by at least 1 BLEU, so KD has little "
          "to transfer. Train the teacher longer (--teacher-updates).")
PY
say "done: tables in $OUT/study/eval-quickstart/report.md and $OUT/study/study-quickstart.md, curves in $OUT/study/curves-quickstart.png"
