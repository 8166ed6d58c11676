#!/usr/bin/env bash
# Multi30k task 1 German-English (the corpus of the CPU experiments and the quickstart):
# Moses tokenization, lowercasing (--no-lowercase keeps case), clean-corpus-n on train
# (1-175 tokens, ratio 9 = clean-corpus-n default: keeps all 29,000 pairs), joint BPE (8k merges), fairseq-preprocess --joined-dictionary.
#
#   bash data_prep/prepare-multi30k.sh --src de --tgt en --out data-bin/multi30k.de-en
#
# Data: --raw DIR (train/val/test.{de,en}), else ../shared/data/multi30k-de-en next to the
# repository, else a download from github.com/multi30k/dataset. All options: --help
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_prepare multi30k de en "$@"
