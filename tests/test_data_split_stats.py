"""`opclaim data split` (60/20/20, balanced by month, deterministic, disjoint) and
`opclaim data stats` (PNG plots + HTML + stats.json, no note text)."""

import json
import os
import random
import stat
import subprocess
from collections import Counter

import pytest

from opclaim.io import read_cases, write_cases
from opclaim.split import SPLITS, month_of, split_cases
from opclaim.synth import generate_cases
from tests.conftest import opclaim_exe


@pytest.fixture(scope="module")
def cases():
    return generate_cases(1000, seed=4, style="terse", length="short")


def test_split_sizes_disjoint_and_deterministic(cases):
    parts = split_cases(cases, seed=0)
    sizes = {k: len(v) for k, v in parts.items()}
    assert sizes == {"train": 600, "val": 200, "test": 200}
    ids = [c.id for v in parts.values() for c in v]
    assert len(ids) == len(set(ids)) == len(cases)
    shuffled = cases[:]
    random.Random(3).shuffle(shuffled)
    again = split_cases(shuffled, seed=0)  # input order does not matter
    assert {k: [c.id for c in v] for k, v in again.items()} == {k: [c.id for c in v] for k, v in parts.items()}
    other = split_cases(cases, seed=1)
    assert {c.id for c in other["test"]} != {c.id for c in parts["test"]}


def test_split_is_balanced_within_every_month(cases):
    parts = split_cases(cases, seed=0)
    per_month = {s: Counter(month_of(c) for c in parts[s]) for s in SPLITS}
    total = Counter(month_of(c) for c in cases)
    assert len(total) == 60  # 2019-2023
    for month, n in total.items():
        for s, share in zip(SPLITS, (0.6, 0.2, 0.2), strict=True):
            assert abs(per_month[s][month] - share * n) <= 1.6, (month, s, per_month[s][month], n)


def test_split_custom_ratios_and_undated():
    cs = generate_cases(100, seed=1, length="short")
    for c in cs[:10]:
        c.date = None
    parts = split_cases(cs, seed=0, ratios=(8, 1, 1))
    assert [len(parts[s]) for s in SPLITS] == [80, 10, 10]
    undated = Counter(s for s in SPLITS for c in parts[s] if c.date is None)
    assert undated["train"] >= 7
    with pytest.raises(ValueError):
        split_cases(cs, ratios=(1, 1))


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_split_writes_private_splits_and_marker(tmp_path, cli_env, cases):
    src = tmp_path / "cases.jsonl"
    write_cases(src, cases[:200])
    out = tmp_path / "splits"
    r = subprocess.run([opclaim_exe(), "data", "split", str(src), "--out", str(out), "--seed", "2"],
                       env=cli_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "split.json").read_text())
    assert info["counts"] == {"train": 120, "val": 40, "test": 40}
    got = {s: {c.id for c in read_cases(out / f"{s}.jsonl")} for s in SPLITS}
    assert not (got["train"] & got["val"]) and not (got["train"] & got["test"]) and not (got["val"] & got["test"])
    assert set().union(*got.values()) == {c.id for c in cases[:200]}
    for s in SPLITS:
        assert stat.S_IMODE(os.stat(out / f"{s}.jsonl").st_mode) == 0o600
    bad = subprocess.run([opclaim_exe(), "data", "split", str(src), "--out", str(out), "--ratios", "60,40"],
                         env=cli_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--ratios" in bad.stderr


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_stats_plots_html_and_no_note_text(tmp_path, cli_env):
    cs = generate_cases(300, seed=9, style="dictation")
    src = tmp_path / "cases.jsonl"
    write_cases(src, cs)
    out = tmp_path / "stats"
    r = subprocess.run([opclaim_exe(), "data", "stats", str(src), "--out", str(out)],
                       env=cli_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    st = json.loads((out / "stats.json").read_text())
    assert st["cases"] == 300 and len(st["top_icd10"]) == 50 and len(st["top_cpt"]) == 50
    assert st["distinct_cpt"] == len({x for c in cs for x in c.claim.cpt_set()})
    top_icd = Counter(x for c in cs for x in c.claim.icd10_set()).most_common(1)[0]
    assert tuple(st["top_icd10"][0]) == top_icd
    assert dict(st["services"])["Ophthalmology"] == sum(c.service == "Ophthalmology" for c in cs)
    assert st["note_tokens"]["median"] > 300
    for name in st["images"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert "<img src=\"note_tokens.png\"" in page and "Ophthalmology" in page
    # no note text (check distinctive note sentences) and no ids in any output
    blob = page + (out / "stats.json").read_text()
    for c in cs[:50]:
        assert c.id not in blob
        longest = max(c.note.split("\n"), key=len)
        assert longest[:60] not in blob


def test_stats_break_patients_down_by_age_band_and_sex(tmp_path):
    from opclaim import stats
    from opclaim.io import read_cases, write_jsonl

    cs = generate_cases(120, seed=4, style="terse")
    rows = [{**c.to_dict(), "patient": c.patient} for c in cs]
    rows[0].pop("patient")  # missing stays missing: "unknown"
    write_jsonl(tmp_path / "c.jsonl", rows)
    st = stats.write(read_cases(tmp_path / "c.jsonl"), tmp_path / "out", source=str(tmp_path / "c.jsonl"))
    bands, sexes = dict(st["patients"]["age_band"]), dict(st["patients"]["sex"])
    assert sum(bands.values()) == sum(sexes.values()) == 120 and bands["unknown"] == sexes["unknown"] == 1
    assert bands.get("80+", 0) == sum(c.patient["age"] >= 80 for c in cs[1:])
    assert "Patients (Table 1)" in (tmp_path / "out" / "index.html").read_text()
