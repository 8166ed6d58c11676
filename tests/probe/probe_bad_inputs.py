"""Replay the bad-input probe: every command-line tool fed bad input and faults, each case judged by a fixed rule.

    python tests/probe/probe_bad_inputs.py --work /tmp/probe [--only ID,ID] [--table out.md]

``--work`` is an empty folder (or one that ``tests/probe/setup.sh`` already filled): tiny Multi30k data-bins, 20-update
teachers and a PET student are made there first. Each case runs as a real process in that folder with the project's
environment first on ``PATH`` and ``OMP_NUM_THREADS=1``; its command, output and exit status go to ``WORK/logs/ID.*``.

A case expects a refusal, a correct result, or a fault handled (an interrupt). The verdict rule:

- LOST: a file or folder named in the case's ``guard`` changed or disappeared (sha256 of its bytes, or of every file
  under a folder, before and after).
- refusal expected: exit 0 is SILENT; a nonzero exit with no Python traceback, an ``error:`` line and every key word of
  the case (case-insensitive) is CLEAR; anything else is UNCLEAR.
- result expected: exit 0 and the case's check (a shell command, exit 0) passing is OK; exit 0 with the check failing
  is SILENT; a nonzero exit is UNCLEAR.
- fault: the check passing is OK, else SILENT.
- UPSTREAM: a case outside the plugin's reach (stock fairseq without ``--user-dir``), judged by the same rule but
  reported as what fairseq does; the verdict column says so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("PET_VENV", REPO / ".venv")) / "bin"


@dataclass(frozen=True)
class Case:
    id: str
    tool: str
    what: str
    cmd: str
    expect: str  # "refuse", "ok" or "fault"
    words: tuple[str, ...] = ()
    guard: tuple[str, ...] = ()
    check: str | None = None
    before: str | None = None
    interrupt: tuple[int, float] | None = None
    upstream: bool = False
    timeout: int = 600


RECIPE = ("pet-recipe --data-bin $D --out tp/a --teacher $T --cpu --seqkd fairseq "
          "--seqkd-args '--beam 1 --num-shards 2 --max-replaced 1' --cache-k 4 --student-updates 5 --max-tokens 2000 "
          "--student-arch pet_transformer --student-args \"$STU\"")
FT = ("fairseq-train $D --cpu --optimizer adam --lr 1e-3 --max-tokens 2000 --no-epoch-checkpoints --log-format simple "
      "--user-dir $U --seed 1 -s de -t en --arch pet_transformer $STU")
KD = FT + " --task pet_distillation --criterion pet_kd"
GEN = "fairseq-generate $D --gen-subset test --beam 1 --batch-size 64 --max-len-b 20"
SEQKD = "pet-seqkd $D --teacher $T --beam 1 --max-len-b 20"
STUDY_SPEC = ('{"budget": 3, "common_args": "--optimizer adam --lr 1e-3 --max-tokens 2000", '
              '"students": {"pet": "--arch pet_transformer STUDENT_ARGS"}, '
              '"variants": [{"name": "no-kd", "student": "pet", "criterion": "ce", "seed": 1}]}')

CASES: list[Case] = [
    # pet-translate
    Case("tr01", "pet-translate", "checkpoint does not exist", "pet-translate m/nonexist.pt in/five.de", "refuse",
         ("does not exist",)),
    Case("tr02", "pet-translate", "text file as checkpoint", "pet-translate in/text.pt in/five.de", "refuse",
         ("not a fairseq checkpoint",)),
    Case("tr03", "pet-translate", "direction contradicting the checkpoint",
         "pet-translate $S in/five.de --source-lang en --target-lang de", "refuse", ("de->en", "en->de")),
    Case("tr04", "pet-translate", "`--data-bin` with another data-bin's dictionaries",
         "pet-translate $S in/five.de --data-bin d_other/data-bin", "refuse", ("dictionar",)),
    Case("tr05", "pet-translate", "`--beam 0`", "pet-translate $S in/five.de --beam 0", "refuse", ("--beam",)),
    Case("tr06", "pet-translate", "`--max-len-b -5`", "pet-translate $S in/five.de --max-len-b -5", "refuse",
         ("--max-len-b",)),
    Case("tr07", "pet-translate", "`--max-len-a -1`", "pet-translate $S in/five.de --max-len-a -1", "refuse",
         ("--max-len-a",)),
    Case("tr08", "pet-translate", "`--output` in a folder that does not exist",
         "pet-translate $S in/five.de --output out/nodir/x.en", "refuse", ("--output", "out/nodir")),
    Case("tr09", "pet-translate", "`--output` is the input file",
         "pet-translate $S out/same.de --max-len-b 5 --output out/same.de", "refuse", ("--output",),
         guard=("out/same.de",), before="cp in/five.de out/same.de"),
    Case("tr10", "pet-translate", "Ctrl-C 15 s into a 2,000-line run, `--output` on an existing file",
         "pet-translate $S raw/train.de --buffer-size 5 --output out/existing.en", "fault",
         guard=("out/existing.en",), interrupt=(signal.SIGINT, 15),
         check="! ls out/.existing.en* 2>/dev/null | grep -q ."),
    Case("tr11", "pet-translate", "SIGTERM 15 s into the same run",
         "pet-translate $S raw/train.de --buffer-size 5 --output out/existing.en", "fault",
         guard=("out/existing.en",), interrupt=(signal.SIGTERM, 15),
         check="! ls out/.existing.en* 2>/dev/null | grep -q ."),
    Case("tr12", "pet-translate", "a truncated CTranslate2 model.bin", "pet-translate ex/ct2trunc in/five.de", "refuse",
         ("ex/ct2trunc",), before="rm -rf ex/ct2trunc && cp -r ex/ct2 ex/ct2trunc && "
         "truncate -s 20000 ex/ct2trunc/model.bin"),
    Case("tr13", "pet-translate", "CTranslate2 model, contradicting direction",
         "pet-translate ex/ct2 in/five.de --source-lang en --target-lang de", "refuse", ("de->en", "en->de")),
    Case("tr14", "pet-translate", "non-UTF-8 bytes on line 2 (3 lines)",
         "pet-translate $S in/badutf8.de --max-len-b 5 --output out/bad.en", "ok", (),
         check="test $(wc -l < out/bad.en) -eq 3 && grep -q 'not valid UTF-8' $LOG"),
    Case("tr15", "pet-translate", "stdin input, no `--output`",
         "head -3 in/five.de | pet-translate $S --max-len-b 5 > out/stdin.en", "ok",
         check="test $(wc -l < out/stdin.en) -eq 3"),
    Case("tr16", "pet-translate", "`--no-shortlist` on a CTranslate2 model without one",
         "pet-translate ex/ct2 in/five.de --no-shortlist --max-len-b 5 --output out/nsl.en", "ok",
         check="test $(wc -l < out/nsl.en) -eq 5"),
    Case("tr17", "pet-translate", "`--parallel-batches 2` with a fairseq checkpoint",
         "pet-translate $S in/five.de --parallel-batches 2", "refuse", ("--parallel-batches",)),
    Case("tr18", "pet-translate", "`--threads -2`", "pet-translate $S in/five.de --threads -2", "refuse", ("--threads",)),
    # environment and bash wrappers
    Case("sh01", "bash scripts", "no environment (`PET_VENV=/nonexistent`)",
         "PET_VENV=/nonexistent bash $REPO/scripts/translate.sh $S in/five.de", "refuse", ("no environment", "install.sh")),
    Case("sh02", "bash scripts", "`data_prep/prepare-multi30k.sh --help` without an environment",
         "PET_VENV=/nonexistent bash $REPO/data_prep/prepare-multi30k.sh --help", "refuse", ("no environment",)),
    Case("sh03", "bash scripts", "`scripts/export.sh` without an environment",
         "PET_VENV=/nonexistent bash $REPO/scripts/export.sh unroll $S out/x.pt", "refuse", ("no environment",)),
    Case("sh04", "bash scripts", "`train_pet.sh --help` prints the options, not script lines",
         "bash $REPO/scripts/train_pet.sh --help > out/tp_help.txt", "ok",
         check="grep -q -- --student-updates out/tp_help.txt && ! grep -q 'set -euo' out/tp_help.txt"),
    Case("sh05", "bash scripts", "quickstart: `--dataset` without a value",
         "bash $REPO/scripts/quickstart.sh --out qs --dataset", "refuse", ("--dataset",)),
    Case("sh06", "bash scripts", "quickstart: unknown option", "bash $REPO/scripts/quickstart.sh --out qs --bogus",
         "refuse", ("--bogus",)),
    # the recipe (scripts/train_pet.sh = pet-recipe)
    Case("tp01", "pet-recipe", "the recipe with a given teacher, seq-KD corpus, cache and a 5-update student", RECIPE,
         "ok", check="test -s tp/a/student/checkpoint_last.pt"),
    Case("tp02", "pet-recipe", "its student translates raw text with no extra option",
         "pet-translate tp/a/student/checkpoint_last.pt in/five.de --max-len-b 5 --output out/tp.en", "ok",
         check="test $(wc -l < out/tp.en) -eq 5"),
    Case("tp03", "pet-recipe", "its student exported to CTranslate2 translates raw text",
         "pet-export ctranslate2 tp/a/student/checkpoint_last.pt ex/tpct2 --force && "
         "pet-translate ex/tpct2 in/five.de --max-len-b 5 --output out/tpct2.en", "ok",
         check="test $(wc -l < out/tpct2.en) -eq 5"),
    Case("tp04", "pet-recipe", "rerun with `--lr 1e-3`", RECIPE + " --lr 1e-3", "refuse", ("--lr", "--force"),
         guard=("tp/a/student/checkpoint_last.pt",)),
    Case("tp05", "pet-recipe", "rerun with `--seqkd-args '--beam 2 ...'`",
         RECIPE.replace("--beam 1", "--beam 2"), "refuse", ("--beam 2 (was 1)", "--force"), guard=("tp/a/seqkd",)),
    Case("tp06", "pet-recipe", "rerun with `--student-updates 8` resumes the student to 8 updates",
         RECIPE.replace("--student-updates 5", "--student-updates 8"), "ok",
         check="grep -q 'num_updates 8\\b\\|num_updates.: 8\\b\\|\"num_updates\": \"8\"\\|num_updates 8 ' "
         "tp/a/student/train.log || grep -q '@ 8 updates' tp/a/student/train.log"),
    Case("tp07", "pet-recipe", "`--student-updates 0`", RECIPE.replace("tp/a", "tp/z").replace(
        "--student-updates 5", "--student-updates 0"), "refuse", ("--student-updates",)),
    Case("tp08", "pet-recipe", "`--student-updates -5`", RECIPE.replace("tp/a", "tp/z").replace(
        "--student-updates 5", "--student-updates -5"), "refuse", ("--student-updates",)),
    Case("tp09", "scripts/train_pet.sh", "option without its value (last argument)",
         "bash $REPO/scripts/train_pet.sh --data-bin $D --out tp/z --teacher $T --cpu --student-updates", "refuse",
         ("--student-updates",)),
    Case("tp10", "pet-recipe", "`--out` is an existing file", "pet-recipe --data-bin $D --out afile --teacher $T --cpu",
         "refuse", ("--out", "afile"), guard=("afile",)),
    Case("tp11", "pet-recipe", "teacher trained en->de, de->en data-bin",
         "pet-recipe --data-bin $D --out tp/b --teacher m/teacher_ende/checkpoint_best.pt --cpu --seqkd none",
         "refuse", ("en->de", "de->en")),
    Case("tp12", "pet-recipe", "undertrained teacher: every seq-KD hypothesis would be a reference",
         RECIPE.replace("tp/a", "tp/c").replace(" --max-replaced 1", ""), "refuse", ("--max-replaced",)),
    Case("tp13", "pet-recipe", "`--teacher` is a text file", "pet-recipe --data-bin $D --out tp/d --teacher in/text.pt --cpu",
         "refuse", ("not a fairseq checkpoint",)),
    Case("tp14", "pet-recipe", "`--cache-k 0`", RECIPE.replace("tp/a", "tp/z").replace("--cache-k 4", "--cache-k 0"),
         "refuse", ("--cache-k",)),
    Case("tp15", "scripts/train_pet.sh", "Ctrl-C (SIGINT to the process group) 30 s into a 400-update student stage",
         "bash $REPO/scripts/train_pet.sh --data-bin $D --out tp/int --teacher $T --cpu --seqkd none --kd-mode online "
         "--student-updates 400 --max-tokens 2000 --student-arch pet_transformer --student-args \"$STU\"", "fault",
         interrupt=(signal.SIGINT, 30),
         check="sleep 3; ! pgrep -f 'fairseq-trai[n] .*tp/int/student' >/dev/null && test ! -e tp/int/student/.done"),
    Case("tp16", "pet-recipe", "`--warmup-fraction 1.5`", RECIPE.replace("tp/a", "tp/z") + " --warmup-fraction 1.5",
         "refuse", ("--warmup-fraction",)),
    # pet-seqkd
    Case("sk01", "pet-seqkd", "`--num-shards 0`", SEQKD + " --out sk/a --num-shards 0", "refuse", ("--num-shards",)),
    Case("sk02", "pet-seqkd", "`--out` under a file", SEQKD + " --out afile/sub", "refuse", ("--out", "afile"),
         guard=("afile",)),
    Case("sk03", "pet-seqkd", "`--out` = the input data-bin", SEQKD + " --out $D", "refuse", ("--out",), guard=("d",)),
    Case("sk04", "pet-seqkd", "`--work-dir` = the input data-bin",
         "pet-seqkd dcopy/data-bin --teacher $T --beam 1 --max-len-b 20 --out sk/w --work-dir dcopy/data-bin "
         "--max-replaced 1", "refuse", ("--work-dir",), guard=("dcopy",),
         before="rm -rf dcopy && cp -r d dcopy"),
    Case("sk05", "pet-seqkd", "`--work-dir` = a folder of the user's: the corpus is made, the user's files stay",
         SEQKD + " --out sk/v --work-dir userfolder --max-replaced 1", "ok", check="test -s sk/v/train.de-en.en.bin",
         guard=("userfolder/notes.txt",),
         before="mkdir -p userfolder && echo 'my notes' > userfolder/notes.txt"),
    Case("sk06", "pet-seqkd", "`--max-len-b -3`, checked before the split is read", SEQKD + " --out sk/a --max-len-b -3",
         "refuse", ("--max-len-b",)),
    Case("sk07", "pet-seqkd", "data-bin with other dictionaries",
         "pet-seqkd d_other/data-bin --teacher $T --out sk/y", "refuse", ("dictionar",)),
    Case("sk08", "pet-seqkd", "undertrained teacher, default `--max-replaced`", SEQKD + " --out sk/r --num-shards 2",
         "refuse", ("--max-replaced",)),
    Case("sk09", "pet-seqkd", "Ctrl-C 10 s into decoding 8 shards",
         SEQKD.replace("--beam 1", "--beam 2") + " --out sk/good --num-shards 8 --max-replaced 1", "fault",
         interrupt=(signal.SIGINT, 10), check="test ! -e sk/good && test -d sk/good.shards"),
    Case("sk10", "pet-seqkd", "rerun with the same options resumes",
         SEQKD.replace("--beam 1", "--beam 2") + " --out sk/good --num-shards 8 --max-replaced 1", "ok",
         check="test -s sk/good/train.de-en.en.bin && grep -q 'already finished' $LOG"),
    Case("sk11", "pet-seqkd", "rerun onto the finished `--out` without `--force`",
         SEQKD.replace("--beam 1", "--beam 2") + " --out sk/good --num-shards 8 --max-replaced 1", "refuse",
         ("--force",), guard=("sk/good",)),
    Case("sk12", "pet-seqkd", "`--shard-id 5 --num-shards 2`", SEQKD + " --out sk/a --shard-id 5 --num-shards 2",
         "refuse", ("--shard-id",)),
    # pet-kdcache
    Case("kc01", "pet-kdcache", "`--max-tokens 60`, below the longest sentence",
         "pet-kdcache $D --teacher $T --out kc/d --k 4 --max-tokens 60", "refuse", ("--max-tokens",)),
    Case("kc02", "pet-kdcache", "`--out` a finished cache (k 4), rerun with `--k 8`",
         "pet-kdcache $D --teacher $T --out kc/c --k 8", "refuse", ("--force",), guard=("kc/c",)),
    Case("kc03", "pet-kdcache", "`--k 0`", "pet-kdcache $D --teacher $T --out kc/a --k 0", "refuse", ("--k",)),
    Case("kc04", "pet-kdcache", "teacher of the opposite direction",
         "pet-kdcache $D --teacher m/teacher_ende/checkpoint_best.pt --out kc/a", "refuse", ("en->de",)),
    Case("kc05", "pet-kdcache", "`--out` is a file", "pet-kdcache $D --teacher $T --out afile --k 4", "refuse",
         ("--out",), guard=("afile",)),
    # fairseq-train with the plugin
    Case("ft01", "fairseq-train --user-dir pet_fairseq", "resume a distillation run with another teacher",
         KD + " --max-update 6 --save-dir ft/r --teacher-path m/teacher2/checkpoint_best.pt", "refuse",
         ("teacher",), guard=("ft/r",),
         before="rm -rf ft/r && " + KD + " --max-update 3 --save-dir ft/r "
         "--teacher-path $T > /dev/null 2>&1"),
    Case("ft02", "fairseq-train --user-dir pet_fairseq", "resume with `--allow-teacher-change` and a teacher of another width",
         KD + " --max-update 6 --save-dir ft/r --teacher-path m/teacher_w48/checkpoint_best.pt --allow-teacher-change",
         "refuse", ("width",), guard=("ft/r",)),
    Case("ft03", "fairseq-train --user-dir pet_fairseq", "`--teacher-path` is a text file", KD + " --max-update 2 --save-dir ft/x "
         "--teacher-path in/text.pt", "refuse", ("not a fairseq checkpoint",)),
    Case("ft04", "fairseq-train --user-dir pet_fairseq", "`--kd-alpha 2`", KD + " --max-update 2 --save-dir ft/x --teacher-path $T --kd-alpha 2",
         "refuse", ("--kd-alpha",)),
    Case("ft05", "fairseq-train --user-dir pet_fairseq", "`--criterion pet_kd` with `--task translation`",
         FT + " --max-update 2 --save-dir ft/x --task translation --criterion pet_kd", "refuse", ("pet_distillation",)),
    Case("ft06", "fairseq-train --user-dir pet_fairseq", "teacher cache made from another teacher",
         KD + " --max-update 2 --save-dir ft/x --teacher-path m/teacher2/checkpoint_best.pt --teacher-cache kc/c "
         "--inter-beta 0", "refuse", ("another teacher",), guard=("kc/c",)),
    Case("ft07", "fairseq-train --user-dir pet_fairseq", "teacher cache with the intermediate-layer loss",
         KD + " --max-update 2 --save-dir ft/x --teacher-path $T --teacher-cache kc/c --inter-beta 2", "refuse",
         ("--inter-beta",)),
    Case("ft08", "fairseq-train --user-dir pet_fairseq", "teacher of the opposite direction",
         KD + " --max-update 2 --save-dir ft/x --teacher-path m/teacher_ende/checkpoint_best.pt", "refuse",
         ("en->de",)),
    Case("ft09", "fairseq-train --user-dir pet_fairseq", "`--encoder-layer-plan 0,x,0~`",
         KD + " --encoder-layer-plan 0,x,0~ --max-update 2 --save-dir ft/x --teacher-path $T",
         "refuse", ("--encoder-layer-plan",)),
    # fairseq-generate
    Case("fg01", "stock fairseq-generate (no plugin)", "unrolled export, with the option that unroll prints",
         GEN + " --path ex/unrolled.pt --required-batch-size-multiple 1 > out/fg01.txt", "ok",
         check="grep -c '^H-' out/fg01.txt | grep -qx 100"),
    Case("fg02", "stock fairseq-generate (no plugin)", "unrolled export without `--required-batch-size-multiple 1`",
         GEN + " --path ex/unrolled.pt > out/fg02.txt", "ok", check="grep -c '^H-' out/fg02.txt | grep -qx 100",
         upstream=True),
    Case("fg03", "fairseq-generate --user-dir pet_fairseq", "the PET student with the plugin: every test sentence",
         GEN + " --path $S --user-dir $U > out/fg03.txt", "ok", check="grep -c '^H-' out/fg03.txt | grep -qx 100"),
    Case("fg04", "fairseq-generate --user-dir pet_fairseq", "`-s en -t de` with a de->en student, plugin loaded",
         GEN + " --path $S --user-dir $U -s en -t de", "refuse", ("de->en", "en->de")),
    Case("fg05", "fairseq-generate --user-dir pet_fairseq", "`--path` a text file, plugin loaded", GEN + " --path in/text.pt --user-dir $U",
         "refuse", ("not a fairseq checkpoint",)),
    Case("fg06", "stock fairseq-generate (no plugin)", "PET checkpoint without `--user-dir`", GEN + " --path $S", "refuse",
         ("user-dir",), upstream=True),
    # pet-export
    Case("ex01", "pet-export", "unroll: output is an existing file", "pet-export unroll $S out/existing.en", "refuse",
         ("--force",), guard=("out/existing.en",)),
    Case("ex02", "pet-export", "unroll: output is a folder", "pet-export unroll $S in/adir", "refuse", ("in/adir",),
         guard=("in/adir",)),
    Case("ex03", "pet-export", "unroll: output = the student checkpoint", "pet-export unroll ex/self.pt ex/self.pt --force",
         "refuse", ("ex/self.pt",), guard=("ex/self.pt",), before="cp $S ex/self.pt"),
    Case("ex04", "pet-export", "ctranslate2: existing output folder", "pet-export ctranslate2 $S ex/ct2", "refuse",
         ("--force",), guard=("ex/ct2",)),
    Case("ex05", "pet-export", "ctranslate2 `--force --data-bin` of other dictionaries",
         "pet-export ctranslate2 $S ex/ct2 --force --data-bin d_other/data-bin", "refuse", ("dictionar",),
         guard=("ex/ct2",)),
    Case("ex06", "pet-export", "ctranslate2 with a shortlist built en->de",
         "pet-export ctranslate2 $S ex/ct2sl --vocab-shortlist ex/swapped.vmap", "refuse", ("en->de",),
         before="pet-export shortlist ex/swapped.vmap --data-bin $D --source-lang en --target-lang de --per-token 3 --force "
         "> /dev/null 2>&1"),
    Case("ex07", "pet-export", "ctranslate2 with a shortlist of another data-bin",
         "pet-export ctranslate2 $S ex/ct2sl --vocab-shortlist ex/other.vmap", "refuse", ("d_other",),
         before="pet-export shortlist ex/other.vmap --data-bin d_other/data-bin --source-lang de --target-lang en "
         "--per-token 3 --force > /dev/null 2>&1"),
    Case("ex08", "pet-export", "translate: `--input` does not exist", "pet-export translate ex/ct2 --input in/missing.de",
         "refuse", ("missing.de",)),
    Case("ex09", "pet-export", "translate: `--input` with non-UTF-8 bytes",
         "pet-export translate ex/ct2 --input in/badutf8.de > out/ex09.en", "ok",
         check="test $(wc -l < out/ex09.en) -eq 3 && grep -q 'UTF-8' $LOG"),
    # pet-study
    Case("st01", "pet-study", "direction contradicting the teacher",
         "pet-study --spec out/spec.json --data-bin $D --teacher $T --out st/x --source-lang en --target-lang de "
         "--train-only", "refuse", ("de->en", "en->de"), before="echo '" + STUDY_SPEC + "' | sed \"s|STUDENT_ARGS|$STU|\" > out/spec.json"),
    Case("st02", "pet-study", "`--threads -1`", "pet-study --spec out/spec.json --data-bin $D --teacher $T --out st/y "
         "--source-lang de --target-lang en --threads -1", "refuse", ("--threads",)),
    Case("st03", "pet-study", "spec with broken JSON", "pet-study --spec in/five.de --data-bin $D --teacher $T --out st/y "
         "--source-lang de --target-lang en --train-only", "refuse", ("five.de",)),
    Case("st04", "pet-study", "a 3-update study", "pet-study --spec out/spec.json --data-bin $D --teacher $T --out st/z "
         "--source-lang de --target-lang en --train-only --threads 1", "ok",
         check="test -e st/z/runs/no-kd/.done || ls st/z/runs/*/.done"),
    Case("st05", "pet-study", "rerun after the variant's options changed",
         "pet-study --spec out/spec2.json --data-bin $D --teacher $T --out st/z --source-lang de --target-lang en "
         "--train-only --threads 1", "refuse", ("--lr",), guard=("st/z/runs",),
         before="sed 's/--lr 1e-3/--lr 5e-3/' out/spec.json > out/spec2.json"),
    # pet-compare
    Case("cp01", "pet-compare", "direction contradicting the models",
         "pet-compare --data-bin $D --max-sentences 5 --repeats 1 --source-lang en --target-lang de $T $S", "refuse",
         ("de->en", "en->de")),
    Case("cp02", "pet-compare", "an en->de model in a de->en comparison",
         "pet-compare --data-bin $D --max-sentences 5 --repeats 1 $T m/teacher_ende/checkpoint_best.pt", "refuse",
         ("en->de",)),
    Case("cp03", "pet-compare", "`--bpe-codes` does not exist",
         "pet-compare --data-bin $D --max-sentences 5 --repeats 1 --bpe-codes d/bpe/nope $T $S", "refuse",
         ("--bpe-codes",)),
    Case("cp04", "pet-compare", "`--out-dir` is a file",
         "pet-compare --data-bin $D --max-sentences 5 --repeats 1 --out-dir afile $T $S", "refuse", ("--out-dir",),
         guard=("afile",)),
    # pet-prune
    Case("pr01", "pet-prune", "`--out-dir` is a file", "pet-prune $D --path $S --out-dir afile --target-encoder-layers 3",
         "refuse", ("--out-dir",), guard=("afile",)),
    Case("pr02", "pet-prune", "`--out-dir` under a file",
         "pet-prune $D --path $S --out-dir afile/a --target-encoder-layers 3", "refuse", ("--out-dir",),
         guard=("afile",)),
    Case("pr03", "pet-prune", "`--metric bleu --beam 0`",
         "pet-prune $D --path $S --out-dir pr/a --target-encoder-layers 3 --metric bleu --beam 0", "refuse", ("--beam",)),
    Case("pr04", "pet-prune", "direction contradicting the model",
         "pet-prune $D --path $S --out-dir pr/a --target-encoder-layers 3 --source-lang en --target-lang de", "refuse",
         ("en->de",)),
    # pet-kronecker-init
    Case("kr01", "pet-kronecker-init", "output in a folder that does not exist",
         "pet-kronecker-init $T kr/nodir/s.pt --kronecker-ffn 4,4", "refuse", ("kr/nodir",)),
    Case("kr02", "pet-kronecker-init", "output = the teacher checkpoint",
         "pet-kronecker-init out/tcopy.pt out/tcopy.pt --kronecker-ffn 4,4 --force", "refuse", ("tcopy.pt",),
         guard=("out/tcopy.pt",), before="cp $T out/tcopy.pt"),
    Case("kr03", "pet-kronecker-init", "output exists", "pet-kronecker-init $T out/existing.en --kronecker-ffn 4,4",
         "refuse", ("--force",), guard=("out/existing.en",)),
    # pet-plateau
    Case("pl01", "pet-plateau", "report: non-UTF-8 log", "pet-plateau report in/badutf8.de", "refuse",
         ("validation",)),
    Case("pl02", "pet-plateau", "average: `--last 0`", "pet-plateau average pl/sd --last 0 --out out/avg.pt", "refuse",
         ("--last",)),
    Case("pl03", "pet-plateau", "average: `--out` = one of the averaged checkpoints",
         "pet-plateau average pl/sd --last 2 --out pl/sd/checkpoint_1_20.pt", "refuse", ("--out",), guard=("pl/sd",)),
    Case("pl04", "pet-plateau", "average of the last 2 checkpoints", "pet-plateau average pl/sd --last 2 --out out/avg.pt",
         "ok", check="test -s out/avg.pt"),
    # pet-prepare
    Case("pp01", "pet-prepare", "`--bpe-merges -5`",
         "bash $REPO/data_prep/prepare-multi30k.sh --bpe-merges -5 --raw raw --out pp/e", "refuse", ("--bpe-merges",)),
    Case("pp02", "pet-prepare", "empty train/val/test files",
         "bash $REPO/data_prep/prepare-multi30k.sh --raw rawempty --out pp/i", "refuse", ("train",),
         before="mkdir -p rawempty && for s in train val test; do for l in de en; do : > rawempty/$s.$l; done; done"),
    Case("pp03", "pet-prepare", "`--out` existing and non-empty", "bash $REPO/data_prep/prepare-multi30k.sh --raw raw --out d",
         "refuse", ("--force",), guard=("d",)),
    # pet-update-cost
    Case("uc01", "pet-update-cost", "`--updates 0`",
         "pet-update-cost --spec $REPO/configs/study/multi30k.json --data-bin $D --teacher $T --modes ce --updates 0",
         "refuse", ("--updates",)),
]


#: Shown instead of the long common commands in the report (longest first, so KD wins over FT).
ABBREVIATIONS = (("$RECIPE", RECIPE), ("$KD", KD), ("$FT", FT), ("$SEQKD", SEQKD), ("$GEN", GEN))


def shorten(cmd: str) -> str:
    for name, text in ABBREVIATIONS:
        cmd = cmd.replace(text, name)
    return cmd


def tree_digest(path: Path) -> str:
    """sha256 over a file's bytes, or over every file (relative name and bytes) under a folder; MISSING if absent."""
    if not path.exists():
        return "MISSING"
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path if path.is_dir() else path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def environment(work: Path) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1", REPO=str(REPO),
               U=str(REPO / "pet_fairseq"), D="d/data-bin", T="m/teacher/checkpoint_best.pt",
               S="m/student/checkpoint_best.pt")
    env["STU"] = (work / "student_args.txt").read_text().strip()
    return env


def _default_signals() -> None:
    """A terminal's Ctrl-C reaches a process with SIGINT at its default; a probe started in the background has it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_case(case: Case, work: Path, env: dict[str, str]) -> dict:
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(env, LOG=str(logs / f"{case.id}.out"))
    if case.before:
        subprocess.run(["bash", "-c", case.before], cwd=work, env=env, check=True)
    before = {g: tree_digest(work / g) for g in case.guard}
    (logs / f"{case.id}.cmd").write_text(case.cmd + "\n")
    start = time.monotonic()
    with open(logs / f"{case.id}.out", "w") as out:
        proc = subprocess.Popen(["bash", "-c", case.cmd], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_default_signals)
        if case.interrupt:
            sig, after = case.interrupt
            try:
                proc.wait(timeout=after)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, sig)
        try:
            rc = proc.wait(timeout=case.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    seconds = time.monotonic() - start
    text = (logs / f"{case.id}.out").read_text(errors="replace")
    (logs / f"{case.id}.rc").write_text(f"{rc}\n")
    check_ok = None
    if case.check:
        check_ok = subprocess.run(["bash", "-c", case.check], cwd=work, env=env).returncode == 0
    changed = [g for g in case.guard if tree_digest(work / g) != before[g]]
    return {"rc": rc, "text": text, "check": check_ok, "changed": changed, "seconds": seconds,
            "verdict": verdict(case, rc, text, check_ok, changed)}


def verdict(case: Case, rc: int, text: str, check_ok: bool | None, changed: list[str]) -> str:
    if changed:
        return "LOST"
    if case.expect == "fault":
        return "OK" if check_ok else "SILENT"
    if case.expect == "ok":
        if rc != 0:
            return "UNCLEAR"
        return "OK" if check_ok in (None, True) else "SILENT"
    if rc == 0:
        return "SILENT"
    lowered = text.lower()
    clear = ("Traceback (most recent call last)" not in text and re.search(r"(^|: )error:", text, re.M)
             and all(word.lower() in lowered for word in case.words))
    return "CLEAR" if clear else "UNCLEAR"


def what_user_sees(text: str) -> str:
    """The first ``error:`` line, else the last line that is not a progress or usage line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if re.search(r"(^|: )error:", line):
            return line[:260]
    return (lines[-1] if lines else "(no output)")[:260]


def markdown_row(case: Case, result: dict) -> str:
    cell = what_user_sees(result["text"]).replace("|", "\\|")
    cmd = shorten(case.cmd).replace("|", "\\|")
    shown = result["verdict"] + (" (stock fairseq)" if case.upstream else "")
    extra = f"; changed: {', '.join(result['changed'])}" if result["changed"] else ""
    if result["check"] is not None:
        extra += "; check passed" if result["check"] else "; check failed"
    return f"| {case.id} | {case.what} | `{cmd}` | {result['rc']} | {cell}{extra} | **{shown}** |"


VERDICTS = ("CLEAR", "UNCLEAR", "SILENT", "LOST", "OK")


def report(rows: list[tuple[Case, str, str]]) -> str:
    """A summary table (verdicts per tool) and one table of cases per tool, from (case, markdown row, verdict)."""
    tools = list(dict.fromkeys(case.tool for case, _, _ in rows))
    lines = ["| tool | " + " | ".join(VERDICTS) + " | cases |", "|---|" + "---|" * (len(VERDICTS) + 1)]
    for tool in tools + ["all"]:
        mine = [verdict for case, _, verdict in rows if tool in ("all", case.tool)]
        counts = " | ".join(str(mine.count(v)) for v in VERDICTS)
        lines.append(f"| {tool if tool != 'all' else '**all**'} | {counts} | {len(mine)} |")
    for tool in tools:
        lines += ["", f"### {tool}", "", "| # | input / fault | command | exit | what the user sees | verdict |",
                  "|---|---|---|---|---|---|"]
        lines += [row for case, row, _ in rows if case.tool == tool]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (made and filled if empty)")
    parser.add_argument("--only", help="comma-separated case ids to run (default: all, in order)")
    parser.add_argument("--start", help="skip the cases before this id")
    parser.add_argument("--table", type=Path, help="write the summary and the per-tool tables (markdown) here")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "student_args.txt").exists():
        print(f"[probe] making the tiny data and models in {work}", flush=True)
        env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
        subprocess.run(["bash", str(REPO / "tests/probe/setup.sh"), str(REPO)], cwd=work, env=env, check=True)
    env = environment(work)
    only = set(args.only.split(",")) if args.only else None
    rows, counts = [], {}
    cases = CASES[[c.id for c in CASES].index(args.start):] if args.start else CASES
    for case in cases:
        if only and case.id not in only:
            continue
        result = run_case(case, work, env)
        key = result["verdict"] + (" (stock fairseq)" if case.upstream else "")
        counts[key] = counts.get(key, 0) + 1
        print(f"[probe] {case.id} {result['verdict']:8s} rc={result['rc']:<4} {result['seconds']:5.1f}s "
              f"{what_user_sees(result['text'])[:150]}", flush=True)
        rows.append((case, result))
    if args.table:
        write_atomic(args.table, report([(case, markdown_row(case, result), result["verdict"]) for case, result in rows]))
    print("[probe] " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f"; {len(rows)} cases", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
