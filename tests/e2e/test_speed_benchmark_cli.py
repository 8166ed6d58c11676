"""scripts/benchmark_speed.sh end to end: registered architectures, both engines, table and JSON."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, toy_dictionary
from tests.e2e.conftest import run

pytestmark = pytest.mark.e2e


def test_benchmark_speed_script_prints_the_table_and_writes_json(tmp_path):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    toy_dictionary(100).save(str(tmp_path / "dict.txt"))
    (tmp_path / "src.txt").write_text("".join(f"w{i} w{i + 1} w{2 * i}\n" for i in range(8)), encoding="utf-8")
    for lang, offset in (("de", 0), ("en", 50)):  # the shortlist's bitext
        (tmp_path / f"bitext.{lang}").write_text("".join(f"w{i + offset} w{i + offset + 1}\n" for i in range(20)),
                                                 encoding="utf-8")
    out = tmp_path / "speed.json"
    proc = run(["bash", str(REPO / "scripts" / "benchmark_speed.sh"), "--archs",
                "pet_iwslt_de_en,pet_deep_shallow_iwslt_de_en", "--dictionary", str(tmp_path / "dict.txt"),
                "--source-text", str(tmp_path / "src.txt"), "--sentences", "8", "--batch-size", "4",
                "--latency-sentences", "2", "--output-length", "5", "--repeats", "1", "--threads", "1",
                "--profile-sentences", "4", "--shortlist-bitext", str(tmp_path / "bitext"), "--json", str(out)],
               timeout=300)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| pet")]
    assert len(rows) == 6 + 2  # (2 models x 3 engines) speed rows, 2 profile rows
    assert "| pet_iwslt_de_en | fairseq |" in rows[0] and "| CTranslate2 int8 |" in rows[2]
    assert "| CTranslate2 int8 + shortlist |" in rows[4]
    assert "shortlist from 20 sentence pairs" in proc.stderr
    report = json.loads(out.read_text())
    assert report["reference"] == "pet_iwslt_de_en (fairseq)" and report["environment"]["threads"] == 1
    assert all(figures["tokens"] == 5 * figures["sentences"]
               for row in report["models"] for figures in row["modes"].values())
    assert "decode (batch 4, beam 5)" in proc.stderr  # tqdm progress
