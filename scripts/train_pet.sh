#!/usr/bin/env bash
# PET recipe on a binarized dataset: teacher -> sequence-level KD corpus -> teacher cache -> student
# distilled with word-level KD (and optionally PET's warm-up phase), all in one budget of student updates.
#
#   bash scripts/train_pet.sh --data-bin DIR --out DIR [--teacher CKPT] [options]
#
# Stages (a finished stage is reused, so an interrupted recipe resumes and the teacher is cached):
#   1. teacher   fairseq-train --arch --teacher-arch until its validation stops improving (fairseq's
#                --patience over validations every --teacher-validate-every updates; --teacher-max-update is
#                the guard), unless --teacher CKPT is given; reports where it stopped   -> OUT/teacher
#   2. corpus    python -m pet_fairseq.seqkd: the training split re-targeted with the teacher's
#                beam-search output, same dictionaries (--seqkd none skips it)             -> OUT/seqkd
#   3. cache     python -m pet_fairseq.kdcache: the teacher's top-k distributions on that corpus, computed
#                once (--kd-mode cached, the default; --kd-mode online runs the teacher in every update) -> OUT/cache
#   4. student   fairseq-train --task pet_distillation --criterion pet_kd for --student-updates
#                updates; the first --warmup-fraction of them train on PET's simplified targets -> OUT/student
# Every stage records its command; a rerun with other options refuses (naming them) unless --force, except a
# larger --student-updates, which resumes the student to the new count.
# The KD options are pet_kd's defaults (chosen by the study in README.md); --kd-args overrides them.
# Optimiser defaults are the paper's IWSLT'14 settings (Adam 0.9/0.98, lr 5e-4, inverse_sqrt with
# 4000 warm-up updates, dropout 0.3, weight decay 1e-4, label smoothing 0.1, 4096 tokens).
# fairseq's output goes to each stage's train.log; the console shows stages and progress.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"

usage() { sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; cat <<'EOT'
Options:
  --data-bin DIR         binarized data (fairseq-preprocess output)            [required]
  --source-lang L --target-lang L   direction (default: the data-bin's only pair), stored in every checkpoint
  --out DIR              where teacher/, seqkd/ and student/ go                [required]
  --teacher CKPT         use this trained teacher instead of training one
  --teacher-only         stop after the teacher stage
  --teacher-arch A       architecture of a teacher trained here (transformer_iwslt_de_en)
  --student-arch A       student architecture (pet_iwslt_de_en)
  --teacher-max-update N / --teacher-max-epoch N   the teacher's largest budget (default: 50 epochs)
  --teacher-patience N   stop the teacher after N validations without a better --teacher-metric (5; 0 = off)
  --teacher-validate-every N   updates between the teacher's validations (default: every epoch)
  --teacher-metric M     bleu (greedy valid BLEU, the default) or loss (valid loss, no decoding)
  --teacher-average N    use the average of the teacher's last N validated checkpoints (0 = checkpoint_best.pt)
  --student-updates N    the student's whole budget in updates, warm-up included (50000)
  --warmup-fraction F    share of --student-updates spent on the warm-up phase (pet_kd's default)
  --seqkd ENGINE         ctranslate2 (default, fast), fairseq, or none (train on the references)
  --seqkd-args "..."     extra options of python -m pet_fairseq.seqkd (e.g. --beam 1, --compute-type int8)
  --kd-mode MODE         cached (default: the teacher's top-k computed once, no teacher in the loop, no
                         intermediate loss) or online (the teacher runs in every update)
  --cache-k K            tokens per position in the teacher cache (16)
  --max-tokens N (4096)  --lr X (5e-4)  --warmup-updates N (4000)  --dropout X (0.3)
  --teacher-args "..."   extra fairseq-train arguments for the teacher stage
  --student-args "..."   extra fairseq-train arguments for the student (e.g. layer plans)
  --kd-args "..."        extra pet_kd options (e.g. --kd-alpha 0.1 --kd-temperature 10 --inter-beta 50)
  --cpu                  train on CPU
  --force                rerun every stage from scratch (removes OUT/teacher, seqkd, cache, student)
EOT
}

DATA="" OUT="" TEACHER="" TEACHER_ARCH=transformer_iwslt_de_en STUDENT_ARCH=pet_iwslt_de_en TEACHER_ONLY=0
TEACHER_BUDGET=(--max-epoch 50) STUDENT_UPDATES=50000 WARMUP_FRACTION=() SEQKD=ctranslate2 SEQKD_ARGS=""
MAX_TOKENS=4096 LR=5e-4 WARMUP_UPDATES=4000 DROPOUT=0.3
TEACHER_ARGS="" STUDENT_ARGS="" KD_ARGS="" CPU=() SRC="" TGT="" FORCE=0
TEACHER_PATIENCE=5 TEACHER_VALIDATE_EVERY=0 TEACHER_METRIC=bleu TEACHER_AVERAGE=0 KD_MODE=cached CACHE_K=16
while [ $# -gt 0 ]; do
  case "$1" in
    --data-bin) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --teacher) TEACHER="$2"; shift 2 ;;
    --teacher-only) TEACHER_ONLY=1; shift ;;
    --source-lang) SRC="$2"; shift 2 ;;
    --target-lang) TGT="$2"; shift 2 ;;
    --teacher-arch) TEACHER_ARCH="$2"; shift 2 ;;
    --student-arch) STUDENT_ARCH="$2"; shift 2 ;;
    --teacher-max-update) TEACHER_BUDGET=(--max-update "$2"); shift 2 ;;
    --teacher-max-epoch) TEACHER_BUDGET=(--max-epoch "$2"); shift 2 ;;
    --student-updates) STUDENT_UPDATES="$2"; shift 2 ;;
    --teacher-patience) TEACHER_PATIENCE="$2"; shift 2 ;;
    --teacher-validate-every) TEACHER_VALIDATE_EVERY="$2"; shift 2 ;;
    --teacher-metric) TEACHER_METRIC="$2"; shift 2 ;;
    --teacher-average) TEACHER_AVERAGE="$2"; shift 2 ;;
    --kd-mode) KD_MODE="$2"; shift 2 ;;
    --cache-k) CACHE_K="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --warmup-fraction) WARMUP_FRACTION=(--warmup-fraction "$2"); shift 2 ;;
    --seqkd) SEQKD="$2"; shift 2 ;;
    --seqkd-args) SEQKD_ARGS="$2"; shift 2 ;;
    --max-tokens) MAX_TOKENS="$2"; shift 2 ;;
    --lr) LR="$2"; shift 2 ;;
    --warmup-updates) WARMUP_UPDATES="$2"; shift 2 ;;
    --dropout) DROPOUT="$2"; shift 2 ;;
    --teacher-args) TEACHER_ARGS="$2"; shift 2 ;;
    --student-args) STUDENT_ARGS="$2"; shift 2 ;;
    --kd-args) KD_ARGS="$2"; shift 2 ;;
    --cpu) CPU=(--cpu); shift ;;
    --warmup-epochs|--kd-max-update|--kd-max-epoch|--warmup-args)
      echo "error: $1 is gone: the warm-up is now a phase of the student's run; use --student-updates N and" \
           "--warmup-fraction F (see --help)" >&2; exit 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$SEQKD" in ctranslate2|fairseq|none) ;; *) echo "error: --seqkd must be ctranslate2, fairseq or none, not '$SEQKD'" >&2; exit 2 ;; esac
case "$KD_MODE" in cached|online) ;; *) echo "error: --kd-mode must be cached or online, not '$KD_MODE'" >&2; exit 2 ;; esac
case "$TEACHER_METRIC" in bleu|loss) ;; *) echo "error: --teacher-metric must be bleu or loss, not '$TEACHER_METRIC'" >&2; exit 2 ;; esac
positive_int() {  # positive_int OPTION VALUE [MIN]: refuse anything but an integer >= MIN (default 1)
  if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt "${3:-1}" ]; then
    echo "error: $1 must be an integer >= ${3:-1}, not '$2' (fairseq reads 0 updates as 'no limit')" >&2; exit 2
  fi
}
positive_int --student-updates "$STUDENT_UPDATES"
positive_int --max-tokens "$MAX_TOKENS"
positive_int --warmup-updates "$WARMUP_UPDATES" 0
positive_int --teacher-patience "$TEACHER_PATIENCE" 0
positive_int --teacher-validate-every "$TEACHER_VALIDATE_EVERY" 0
positive_int --teacher-average "$TEACHER_AVERAGE" 0
positive_int --cache-k "$CACHE_K"
[ "${TEACHER_BUDGET[0]}" = --max-update ] && positive_int --teacher-max-update "${TEACHER_BUDGET[1]}"
[ "${TEACHER_BUDGET[0]}" = --max-epoch ] && positive_int --teacher-max-epoch "${TEACHER_BUDGET[1]}"
[ -n "$DATA" ] && [ -n "$OUT" ] || { echo "error: --data-bin and --out are required (see --help)" >&2; exit 2; }
[ -d "$DATA" ] || { echo "error: --data-bin $DATA is not a folder; binarize your data first (bash data_prep/prepare-<dataset>.sh)" >&2; exit 2; }
[ -x "$BIN/fairseq-train" ] || { echo "error: $BIN/fairseq-train not found; run: bash scripts/install.sh" >&2; exit 2; }
if [ -n "$TEACHER" ] && [ ! -f "$TEACHER" ]; then echo "error: --teacher $TEACHER does not exist" >&2; exit 2; fi
if [ -n "$SRC$TGT" ] && { [ -z "$SRC" ] || [ -z "$TGT" ]; }; then
  echo "error: pass both --source-lang and --target-lang (or neither: the data-bin's pair)" >&2; exit 2
fi
USER_DIR="$ROOT/pet_fairseq"
# Every stage gets the language pair, so every checkpoint records its direction (fairseq-train infers a
# missing pair from the split file names, SPLIT.SRC-TGT.LANG.idx, but saves None).
if [ -z "$SRC" ] && [ -z "$TGT" ]; then
  PAIRS="$(ls "$DATA" | sed -n 's/^[^.]*\.\([^.-]*\)-\([^.]*\)\.[^.]*\.idx$/\1 \2/p' | sort -u)"
  if [ "$(printf '%s\n' "$PAIRS" | grep -c .)" = 1 ]; then read -r SRC TGT <<< "$PAIRS"; fi
fi
LANGS=()
if [ -n "$SRC" ] && [ -n "$TGT" ]; then LANGS=(--source-lang "$SRC" --target-lang "$TGT"); fi

OPTIM=(--optimizer adam --adam-betas "(0.9, 0.98)" --lr "$LR" --lr-scheduler inverse_sqrt
       --warmup-updates "$WARMUP_UPDATES" --warmup-init-lr 1e-07 --weight-decay 0.0001 --clip-norm 0.0
       --dropout "$DROPOUT" --max-tokens "$MAX_TOKENS" --log-format simple --log-interval 20
       --no-epoch-checkpoints "${CPU[@]}")

stage_failed() {  # stage_failed NAME SAVE_DIR CREATED: a save dir this run created and left empty goes (its log stays)
  local name="$1" dir="$2" created="$3"
  if [ -n "$created" ] && [ -z "$(ls -A "$dir" | grep -vx train.log)" ]; then
    mv "$dir/train.log" "$dir.failed.log" 2>/dev/null || true
    rmdir "$dir"
    echo "error: $name failed before writing a checkpoint; removed its empty save dir $dir (log: $dir.failed.log)" >&2
  else
    echo "error: $name produced no checkpoint (see $dir/train.log)" >&2
  fi
  exit 1
}

progress() {  # progress NAME LOG PID TOTAL: one console line per minute while fairseq-train runs
  local name="$1" log="$2" pid="$3" total="$4" n i=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2  # short sleeps: the loop ends (and releases the console) within 2 s of the run
    i=$(( i + 1 ))
    [ $(( i % 30 )) = 0 ] || continue
    n="$(grep -o 'num_updates[= ][0-9]*' "$log" 2>/dev/null | tail -1 | grep -o '[0-9]*$' || true)"
    [ -n "$n" ] && kill -0 "$pid" 2>/dev/null && echo "[train_pet] $name: $n${total:+ / $total} updates" >&2
  done
}

same_command() {  # same_command NAME RECORD ARGS...: 0 when RECORD holds ARGS; else refuse (exit 2) or return 1 (resume)
  local name="$1" record="$2"; shift 2
  [ -f "$record" ] || return 0
  local now; now="$(printf '%s\n' "$@")"
  [ "$now" = "$(cat "$record")" ] && return 0
  local differing; differing="$(diff <(cat "$record") <(printf '%s\n' "$@") | sed -n 's/^[<>] //p' | sort -u | tr '\n' ' ')"
  if [ "$name" = student ] && [ "$(grep -vx -- "--max-update" "$record" | grep -vxE '[0-9]+' | sort)" = \
       "$(printf '%s\n' "$@" | grep -vx -- "--max-update" | grep -vxE '[0-9]+' | sort)" ]; then
    local old new
    old="$(grep -A1 -x -- "--max-update" "$record" | tail -1)"; new="$(printf '%s\n' "$@" | grep -A1 -x -- "--max-update" | tail -1)"
    if [ "$new" -gt "$old" ]; then echo "[train_pet] student: resuming from $old to $new updates" >&2; return 1; fi
  fi
  echo "error: the $name stage in $(dirname "$record") was run with other options (differing: $differing); pass" \
       "--force to redo every stage, choose another --out, or rerun with the same options" >&2
  exit 2
}

stage() {  # stage NAME SAVE_DIR DONE_FILE TOTAL -- fairseq-train args...
  local name="$1" dir="$2" done="$3" total="$4" created="" pid; shift 5
  if [ -f "$done" ] && same_command "$name" "$dir/command.txt" "$DATA_FOR_STAGE" "$@"; then
    echo "[train_pet] $name: reusing $done" >&2; return
  fi
  rm -f "$done"
  echo "[train_pet] $name -> $dir (fairseq log: $dir/train.log)" >&2
  [ -d "$dir" ] || created=1
  mkdir -p "$dir"
  printf '%s\n' "$DATA_FOR_STAGE" "$@" > "$dir/command.txt"
  "$BIN/fairseq-train" "$DATA_FOR_STAGE" --save-dir "$dir" "${LANGS[@]}" "$@" >> "$dir/train.log" 2>&1 &
  pid=$!
  progress "$name" "$dir/train.log" "$pid" "$total" &
  local progress_pid=$!
  if ! wait "$pid" || [ ! -f "$dir/checkpoint_last.pt" ]; then
    kill "$progress_pid" 2>/dev/null || true
    tail -n 5 "$dir/train.log" >&2
    stage_failed "$name" "$dir" "$created"
  fi
  kill "$progress_pid" 2>/dev/null || true
  touch "$done"
}

[ "$FORCE" = 1 ] && rm -rf "$OUT/teacher" "$OUT/seqkd" "$OUT/seqkd.shards" "$OUT/seqkd.command.txt" "$OUT/cache" \
  "$OUT/cache.command.txt" "$OUT/student"

DATA_FOR_STAGE="$DATA"
if [ -z "$TEACHER" ]; then
  # Plateau stopping: validate every N updates (or every epoch), keep the validated checkpoints, stop after
  # --teacher-patience validations without a better metric; the budget is only the guard.
  PLATEAU=()
  if [ "$TEACHER_VALIDATE_EVERY" -gt 0 ]; then
    PLATEAU+=(--validate-interval-updates "$TEACHER_VALIDATE_EVERY" --save-interval-updates "$TEACHER_VALIDATE_EVERY"
              --validate-interval 1000000 --save-interval 1000000 --keep-interval-updates "$(( TEACHER_AVERAGE > 1 ? TEACHER_AVERAGE : 1 ))")
  fi
  [ "$TEACHER_PATIENCE" -gt 0 ] && PLATEAU+=(--patience "$TEACHER_PATIENCE")
  if [ "$TEACHER_METRIC" = bleu ]; then
    REMOVE_BPE=()
    if [ -f "$DATA/bpe.code" ]; then REMOVE_BPE=(--eval-bleu-remove-bpe subword_nmt)
    elif ls "$DATA"/*.model >/dev/null 2>&1; then REMOVE_BPE=(--eval-bleu-remove-bpe sentencepiece); fi
    PLATEAU+=(--eval-bleu "${REMOVE_BPE[@]}" --eval-bleu-args '{"beam": 1, "max_len_a": 1.2, "max_len_b": 10}'
              --eval-bleu-detok moses --eval-bleu-detok-args "{\"source_lang\": \"$SRC\", \"target_lang\": \"$TGT\"}"
              --best-checkpoint-metric bleu --maximize-best-checkpoint-metric)
  fi
  # shellcheck disable=SC2086
  stage teacher "$OUT/teacher" "$OUT/teacher/.done" "" -- --arch "$TEACHER_ARCH" "${OPTIM[@]}" "${TEACHER_BUDGET[@]}" \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --user-dir "$USER_DIR" "${PLATEAU[@]}" $TEACHER_ARGS
  TEACHER="$OUT/teacher/checkpoint_best.pt"
  [ -f "$TEACHER" ] || TEACHER="$OUT/teacher/checkpoint_last.pt"
  if [ "$TEACHER_AVERAGE" -gt 1 ]; then
    "$BIN/python" -m pet_fairseq.core.plateau average "$OUT/teacher" --last "$TEACHER_AVERAGE" --out "$OUT/teacher/checkpoint_avg.pt"
    TEACHER="$OUT/teacher/checkpoint_avg.pt"
  fi
  "$BIN/python" -m pet_fairseq.core.plateau report "$OUT/teacher/train.log" --metric "$TEACHER_METRIC" \
    --json "$OUT/teacher/plateau.json" >&2 || true
fi
echo "[train_pet] teacher: $TEACHER" >&2
[ "$TEACHER_ONLY" = 1 ] && exit 0

mkdir -p "$OUT"
if [ "$SEQKD" != none ]; then
  # shellcheck disable=SC2086
  SEQKD_COMMAND=(--teacher "$TEACHER" --engine "$SEQKD" "${LANGS[@]}" $SEQKD_ARGS)
  if [ -f "$OUT/seqkd/seqkd.json" ] && same_command corpus "$OUT/seqkd.command.txt" "${SEQKD_COMMAND[@]}"; then
    echo "[train_pet] corpus: reusing $OUT/seqkd" >&2
  else
    printf '%s\n' "${SEQKD_COMMAND[@]}" > "$OUT/seqkd.command.txt"
    echo "[train_pet] corpus: the training split decoded by the teacher ($SEQKD) -> $OUT/seqkd" >&2
    # shellcheck disable=SC2086
    DEVICE=cpu
    if [ ${#CPU[@]} -eq 0 ] && "$BIN/python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then DEVICE=cuda; fi
    "$BIN/python" -m pet_fairseq.seqkd "$DATA" --teacher "$TEACHER" --out "$OUT/seqkd" --engine "$SEQKD" \
      --device "$DEVICE" "${LANGS[@]}" $SEQKD_ARGS
  fi
  DATA_FOR_STAGE="$OUT/seqkd"
fi
CACHE=()
if [ "$KD_MODE" = cached ]; then
  if [ -f "$OUT/cache/cache.json" ] && same_command cache "$OUT/cache.command.txt" "$DATA_FOR_STAGE" "$TEACHER" "$CACHE_K"; then
    echo "[train_pet] cache: reusing $OUT/cache (checked against the teacher and the corpus when the student starts)" >&2
  else
    printf '%s\n' "$DATA_FOR_STAGE" "$TEACHER" "$CACHE_K" > "$OUT/cache.command.txt"
    echo "[train_pet] cache: the teacher's top-$CACHE_K distributions on $DATA_FOR_STAGE -> $OUT/cache" >&2
    "$BIN/python" -m pet_fairseq.kdcache "$DATA_FOR_STAGE" --teacher "$TEACHER" --out "$OUT/cache" --k "$CACHE_K" "${LANGS[@]}"
  fi
  CACHE=(--teacher-cache "$OUT/cache" --inter-beta 0 --encoder-layer-map "" --decoder-layer-map "")
fi
# shellcheck disable=SC2086
stage student "$OUT/student" "$OUT/student/.done" "$STUDENT_UPDATES" -- --user-dir "$USER_DIR" --task pet_distillation \
  --teacher-path "$TEACHER" --criterion pet_kd --arch "$STUDENT_ARCH" "${OPTIM[@]}" --max-update "$STUDENT_UPDATES" \
  "${WARMUP_FRACTION[@]}" "${CACHE[@]}" $STUDENT_ARGS $KD_ARGS
echo "[train_pet] student: $OUT/student/checkpoint_last.pt" >&2
