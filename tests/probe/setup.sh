#!/usr/bin/env bash
# Tiny data-bins, models and input files for the bad-input probe (tests/probe/probe_bad_inputs.py).
# Run in an empty work folder; needs ../shared/data/multi30k-de-en and the project's environment on PATH.
set -euo pipefail
REPO="$1"
S=${SHARED_DATA:-$REPO/../shared/data}/multi30k-de-en
mkdir -p raw in out m ex
for l in de en; do head -2000 "$S/train.$l" > raw/train.$l; head -200 "$S/val.$l" > raw/val.$l; head -100 "$S/test.$l" > raw/test.$l; done
bash "$REPO/data_prep/prepare-multi30k.sh" --raw raw --out d --bpe-merges 1000 --workers 1 > logs.prep 2>&1
bash "$REPO/data_prep/prepare-multi30k.sh" --raw raw --src en --tgt de --out d_ende --bpe-merges 1000 --workers 1 >> logs.prep 2>&1
bash "$REPO/data_prep/prepare-multi30k.sh" --raw raw --out d_other --bpe-merges 500 --workers 1 >> logs.prep 2>&1
COMMON="--cpu --optimizer adam --lr 1e-3 --max-tokens 2000 --max-update 20 --no-epoch-checkpoints --log-format simple --user-dir $REPO/pet_fairseq --seed 1"
teacher() { echo "--arch transformer --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim $1 --decoder-embed-dim $1 \
  --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 --encoder-attention-heads 2 --decoder-attention-heads 2 \
  --share-all-embeddings --criterion label_smoothed_cross_entropy --label-smoothing 0.1"; }
fairseq-train d/data-bin $COMMON -s de -t en $(teacher 64) --save-dir m/teacher > logs.train 2>&1
fairseq-train d/data-bin $COMMON -s de -t en $(teacher 64) --seed 2 --save-dir m/teacher2 >> logs.train 2>&1
fairseq-train d/data-bin $COMMON -s de -t en $(teacher 48) --save-dir m/teacher_w48 >> logs.train 2>&1
fairseq-train d_ende/data-bin $COMMON -s en -t de $(teacher 64) --save-dir m/teacher_ende >> logs.train 2>&1
STU="--encoder-layer-plan 0,1,0~,1~ --decoder-layer-plan 0,1,0~,1~ --encoder-embed-dim 32 --decoder-embed-dim 32 \
  --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 --decoder-attention-heads 2 --share-all-embeddings"
echo "$STU" > student_args.txt
fairseq-train d/data-bin $COMMON -s de -t en --arch pet_transformer $STU --task pet_distillation \
  --teacher-path m/teacher/checkpoint_best.pt --criterion pet_kd --save-dir m/student >> logs.train 2>&1
# a save dir with two interval checkpoints, for pet-plateau average
fairseq-train d/data-bin $COMMON -s de -t en $(teacher 64) --save-interval-updates 10 --keep-interval-updates 4 --save-dir pl/sd >> logs.train 2>&1
pet-export unroll m/student/checkpoint_best.pt ex/unrolled.pt > logs.export 2>&1
pet-export ctranslate2 m/student/checkpoint_best.pt ex/ct2 >> logs.export 2>&1
pet-kdcache d/data-bin --teacher m/teacher/checkpoint_best.pt --out kc/c --k 4 > logs.kdcache 2>&1
# inputs
head -5 raw/test.de > in/five.de
printf 'hello\n' > in/text.pt
head -c 500000 m/teacher/checkpoint_best.pt > in/trunc.pt
: > in/empty.de
printf 'ein mann\n\xff\xfe kaputt\nzwei hunde\n' > in/badutf8.de
mkdir -p in/adir
printf 'line one of a result the user keeps\n' > out/existing.en
printf 'a plain file\n' > afile
