#!/usr/bin/env bash
# WMT'14 English-German, as fairseq's examples/translation/prepare-wmt14en2de.sh, from local files:
# train: normalize-punctuation, remove-non-printing-char, tokenizer -a (cased); valid newstest2013,
# test newstest2014 (full); joint BPE (40k merges); train cleaned after BPE (1-250, ratio 1.5);
# fairseq-preprocess --joined-dictionary.
#
#   bash data_prep/prepare-wmt14.sh --train orig/training/europarl-v7.de-en \
#       --train orig/commoncrawl.de-en --train orig/training/news-commentary-v9.de-en \
#       --valid orig/dev/newstest2013 --test orig/newstest2014 --out data-bin/wmt14.en-de
#
# Defaults: --src en --tgt de --out data-bin/wmt14.SRC-TGT. All options: --help
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_prepare wmt14 en de "$@"
