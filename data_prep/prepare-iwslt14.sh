#!/usr/bin/env bash
# IWSLT'14 German-English, as fairseq's examples/translation/prepare-iwslt14.sh, offline-capable:
# tag stripping, Moses tokenization (sacremoses, tokenizer.perl parity), lowercasing,
# clean-corpus-n (train, 1-175 tokens, ratio 1.5), valid = every 23rd train line,
# test = dev2010 + tedx.dev2012 + tst2010 + tst2011 + tst2012, joint BPE (10k merges),
# fairseq-preprocess --joined-dictionary.
#
#   bash data_prep/prepare-iwslt14.sh --raw PATH/de-en.tgz --src en --tgt de --out data-bin/iwslt14.en-de
#
# Without --raw it downloads de-en.tgz. Defaults: --src de --tgt en --out data-bin/iwslt14.SRC-TGT.
# All options: bash data_prep/prepare-iwslt14.sh --help
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_prepare iwslt14 de en "$@"
