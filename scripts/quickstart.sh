#!/usr/bin/env bash
# The whole method on one machine: data -> a teacher trained until its validation BLEU stops improving ->
# teacher cache (its top-16 distributions and hidden states on the training references) -> the PET student
# distilled from the cache (word KD + intermediate-layer loss, no teacher in the loop), and the same student
# trained without the teacher for the same wall time (the cache included) -> BLEU, memory and decode speed
# side by side, and one line saying what distillation bought at equal time.
#
#   bash scripts/quickstart.sh                  # Multi30k de->en, CPU budgets (see README for the measured time)
#   bash scripts/quickstart.sh --full           # the paper's sizes and budgets (IWSLT-size models): a GPU job
#   bash scripts/quickstart.sh --dataset iwslt14 --raw ~/de-en.tgz   # the paper's corpus, en->de
#
# Finished stages are reused when the script is run again (teacher in OUT/pet/teacher, students
# and cache in OUT/study); --force starts from scratch. The console shows stages, progress and
# the tables; fairseq's logs are files under OUT (each stage names its log).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATASET=multi30k RAW="" OUT="$ROOT/runs/quickstart" FULL=0 FORCE=0 SRC="" TGT="" T_UPDATES=5000 PARTNERS=0 TEACHER_CKPT=""
# an option that takes a value, given as the last argument, is one error line (not bash's "$2: unbound variable")
value() { [ $# -ge 2 ] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) value "$@"; DATASET="$2"; shift 2 ;;
    --raw) value "$@"; RAW="$2"; shift 2 ;;
    --out) value "$@"; OUT="$2"; shift 2 ;;
    --src) value "$@"; SRC="$2"; shift 2 ;;
    --tgt) value "$@"; TGT="$2"; shift 2 ;;
    --full) FULL=1; shift ;;
    --teacher-updates) value "$@"; T_UPDATES="$2"; shift 2 ;;
    --teacher) value "$@"; TEACHER_CKPT="$2"; shift 2 ;;
    --equal-updates) PARTNERS=1; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
               echo "Options: --dataset multi30k|iwslt14  --raw PATH  --src L --tgt L  --out DIR (runs/quickstart)  --full  --force"
               echo "         --teacher-updates N (5000: the guard; the teacher stops earlier, after 3 validations without a better BLEU)"
               echo "         --teacher CKPT (a trained teacher of this data-bin: skip the teacher stage)"
               echo "         --equal-updates (also train the equal-updates partners: no KD and online KD for as many updates as"
               echo "                          the distilled student; the students' budgets are configs/study/multi30k-equal-time.json)"; exit 0 ;;
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
. "$ROOT/scripts/lib/env.sh"

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
  # CPU budgets (2 cores): a 3+3 half-width (256) pre-LN teacher, validated every 250 updates (greedy valid
  # BLEU) and stopped after 3 validations without a better one. The students (configs/study/multi30k-equal-time.json)
  # are PET's student scaled to that teacher as the paper scales it to transformer_iwslt_de_en: 2 unique layers
  # run as 4 (0,1,0~,1~) per side, width 128, ~1/5 of the teacher's parameters; each lane gets 2,400 s.
  TEACHER=(--cpu --teacher-arch transformer --teacher-max-update "$T_UPDATES" --teacher-validate-every 250
           --teacher-patience 3 --teacher-metric bleu --teacher-args
           "--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 \
            --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 \
            --decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before \
            --share-all-embeddings --lr 1.5e-3 --warmup-updates 150 --dropout 0.3")
  SPEC="$ROOT/configs/study/multi30k-equal-time.json" JOBS=(--jobs 2 --threads 1)  # two lanes, a core each
  EVAL="--subset test --beam 5 --batch-size 64 --repeats 1 --max-sentences 500"  # translate's length limit
fi

if [ -n "$TEACHER_CKPT" ]; then
  [ -f "$TEACHER_CKPT" ] || { echo "error: --teacher $TEACHER_CKPT: no such file (pass a fairseq checkpoint)" >&2; exit 2; }
  say "3/5 teacher: $TEACHER_CKPT (given; no teacher training)"
else
  say "3/5 teacher (scripts/train_pet.sh --teacher-only)"
  bash "$ROOT/scripts/train_pet.sh" --data-bin "$DATA/data-bin" --out "$OUT/pet" --source-lang "$SRC" --target-lang "$TGT" \
    --teacher-only "${TEACHER[@]}"
  TEACHER_CKPT="$OUT/pet/teacher/checkpoint_best.pt"
  [ -f "$TEACHER_CKPT" ] || TEACHER_CKPT="$OUT/pet/teacher/checkpoint_last.pt"
fi

BPE=(--bpe subword_nmt --bpe-codes "$DATA/bpe/code")
[ -f "$DATA/bpe/code" ] || BPE=(--bpe sentencepiece --sentencepiece-model "$DATA/bpe/spm.model")
ONLY=distilled,no-kd
[ "$PARTNERS" = 1 ] && ONLY=distilled,no-kd,no-kd-equal-updates,online-kd-equal-updates
[ "$FULL" = 1 ] && ONLY=no-kd,seqkd-wordkd-inter
STUDY=("$BIN/python" -m pet_fairseq.study --spec "$SPEC" --only "$ONLY" --tag quickstart
       --data-bin "$DATA/data-bin" --teacher "$TEACHER_CKPT" --out "$OUT/study" --source-lang "$SRC" --target-lang "$TGT")
say "4/5 two lanes of equal wall time: teacher cache + the distilled PET student, and the same student without KD (python -m pet_fairseq.study; logs under $OUT/study)"
"${STUDY[@]}" "${JOBS[@]}" --train-only
say "5/5 BLEU, memory and decode speed, teacher first (evaluation tool; log: $OUT/study/eval-quickstart.log)"
"${STUDY[@]}" "${BPE[@]}" --eval-args "$EVAL"
echo >&2
cat "$OUT/study/eval-quickstart/report.md" >&2

"$BIN/python" - "$OUT/study/study-quickstart.json" "$(dirname "$TEACHER_CKPT")/plateau.json" "$START" <<'PY'
import json, sys, time
study = json.load(open(sys.argv[1]))
rows = {r["variant"]["name"]: r for r in study["rows"]}
teacher = study["teacher"]["detok"]
try:
    plateau = json.load(open(sys.argv[2]))
    print(f"\nteacher: stopped at update {plateau['stopped_at_update']} after {plateau['wall_seconds']:.0f} s, best valid "
          f"BLEU {plateau['best_value']:.2f} at update {plateau['best_update']}; test BLEU {teacher:.2f}")
except (OSError, KeyError, ValueError):
    print(f"\nteacher: test BLEU {teacher:.2f} (no plateau report: a --teacher checkpoint or an older run)")
if "distilled" in rows:
    kd, nokd = rows["distilled"], rows["no-kd"]
    total = lambda r: (r["train_seconds"] or 0) + (r["paid_seconds"] or 0)
    print(f"equal wall time: distilled {kd['bleu']:.2f} ({total(kd):.0f} s: cache {kd['paid_seconds'] or 0:.0f} s, "
          f"{kd['updates']} updates) vs no KD {nokd['bleu']:.2f} ({total(nokd):.0f} s, {nokd['updates']} updates): "
          f"distillation {'wins' if kd['bleu'] > nokd['bleu'] else 'loses'} by {abs(kd['bleu'] - nokd['bleu']):.2f} BLEU; "
          f"teacher {teacher:.2f}")
    for name in ("no-kd-equal-updates", "online-kd-equal-updates"):
        if name in rows:
            print(f"equal updates ({rows[name]['updates']}): {rows[name]['variant']['label']}: {rows[name]['bleu']:.2f}")
else:
    kd, nokd = rows["seqkd-wordkd-inter"]["bleu"], rows["no-kd"]["bleu"]
    print(f"equal updates: distilled {kd:.2f}, no KD {nokd:.2f} (KD: {kd - nokd:+.2f}), teacher {teacher:.2f}")
print(f"whole run: {time.time() - float(sys.argv[3]):.0f} s")
PY
say "done: tables in $OUT/study/eval-quickstart/report.md and $OUT/study/study-quickstart.md, curves in $OUT/study/curves-quickstart.png"
