"""The distillation study: student variants trained under one update budget, compared in one table.

A *spec* (JSON, e.g. ``configs/study/multi30k.json``) declares the student architectures, the
sequence-level KD corpora and the variants; each variant is one ``fairseq-train`` run of
``budget`` updates from one cached teacher and one data-bin. Finished runs and corpora are cached
in the output folder, so a study can be extended (add a variant to the spec) and resumed.

* :mod:`~pet_fairseq.study.spec` -- reading and checking a spec; each variant's command line
* :mod:`~pet_fairseq.study.runner` -- running corpora and variants (``--jobs`` at a time), cached
* :mod:`~pet_fairseq.study.curves` -- validation NLL / BLEU against updates from fairseq logs, and their plot
* :mod:`~pet_fairseq.study.table` -- the final table (evaluation tool + logs)
* :mod:`~pet_fairseq.study.cli` -- ``python -m pet_fairseq.study`` (behind ``scripts/study.sh``)
* :mod:`~pet_fairseq.study.recipe` -- the PET recipe (teacher, seq-KD corpus, teacher cache, student) as runner jobs,
  ``pet-recipe`` (behind ``scripts/train_pet.sh``)
"""
