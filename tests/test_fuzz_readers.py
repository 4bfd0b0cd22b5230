"""Fuzzing every reader of user-supplied files: no input makes one crash, every record is
accounted for (rejects + accepted == input records), and a canary placed where a value would show
never reaches a message. Seeded generator (tests/malformed_records.py) plus derandomized
hypothesis; readers run in-process, with a few `opclaim data validate` subprocesses for the CLI."""

import csv
import json
import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opclaim import codes, ingest
from opclaim import io as oio
from opclaim.claim import Case, Claim
from opclaim.errors import CodeFormatError, InputError
from tests.conftest import opclaim_exe
from tests.malformed_records import CANARY, KINDS, STRICT_ACCEPTS, generate, good_line, leaks

FUZZ = settings(derandomize=True, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _clean(text: str) -> bool:
    return not leaks(text)


@pytest.fixture(scope="module")
def records():
    return generate(seed=0)


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory, records):
    p = tmp_path_factory.mktemp("fuzz") / "malformed.jsonl"
    with p.open("wb") as fh:
        fh.write(good_line() + b"\n")  # line 1 (a BOM there is legal; the malformed ones follow)
        for _, line in records:
            fh.write(line + b"\n")
    return p


def test_generator_makes_enough_records_of_enough_kinds(records):
    assert len(records) >= 1000
    assert len({k for k, _ in records}) == len(KINDS) >= 100


# ---------------------------------------------------------------- JSONL, lenient (validate)
def test_validate_accounts_for_every_record_and_leaks_nothing(jsonl, records, tmp_path):
    report = ingest.validate(jsonl)
    assert report.read == len(records) + 1
    assert len(report.kept) == 1 and report.kept[0].id == "ok-1"
    assert len(report.rejected) + len(report.kept) == report.read
    kinds = {i + 2: k for i, (k, _) in enumerate(records)}
    rejected_lines = sorted(p.where for p, _ in report.rejected)
    assert rejected_lines == sorted(kinds)
    for p, _ in report.rejected:
        assert p.kind and p.reason and _clean(p.reason) and _clean(p.field or ""), (kinds[p.where], p)
    # the rejects file (original records, 0600) and summary are writable whatever the records held
    oio.write_jsonl(tmp_path / "rejects.jsonl", ingest.reject_rows(report), private=True)
    json.dumps(report.summary())


# ---------------------------------------------------------------- JSONL, strict (read_cases)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_strict_reader_names_the_line_of_each_kind(kind, tmp_path):
    import random

    line = KINDS[kind](random.Random(1), "r-1")
    p = tmp_path / "cases.jsonl"
    p.write_bytes(good_line() + b"\n" + line + b"\n")
    if kind in STRICT_ACCEPTS:
        assert len(oio.read_cases(p)) == 2
        return
    with pytest.raises(InputError) as e:
        oio.read_cases(p)
    assert e.value.line == 2 and str(e.value).startswith(f"{p}:2"), str(e.value)
    assert _clean(str(e.value))


# ---------------------------------------------------------------- CSV
CSV_HEADER = ["id", "date", "note", "icd10", "cpt", "provider", "sex", "age"]


def _csv_rows():
    good = ["c-ok", "2021-03-14", "Synthetic note.", "K80.20", "47562-80", "Dr A", "F", "54"]

    def bad(i, **cells):
        row = dict(zip(CSV_HEADER, good, strict=True))
        row["id"] = f"c-{i}"
        row.update(cells)
        return [row[h] for h in CSV_HEADER]

    rows = [good]
    variants = [dict(icd10=CANARY), dict(cpt=CANARY), dict(cpt="4756O"), dict(icd10="K8O.2O"),
                dict(icd10="Z99.99"), dict(date=CANARY), dict(sex=CANARY), dict(age=CANARY), dict(age="150"),
                dict(note="a\x00" + CANARY), dict(note=""), dict(id=""), dict(icd10="", cpt=""),
                dict(note="n" * (oio.MAX_STRING_CHARS + 1)), dict(cpt=f"47562-{CANARY}")]
    for rep in range(3):
        for j, v in enumerate(variants):
            if "n" * 10 in v.get("note", "") and rep:
                continue
            rows.append(bad(f"{rep}-{j}", **v))
    return rows


def test_csv_reader_accounts_for_every_row(tmp_path):
    rows = _csv_rows()
    p = tmp_path / "export.csv"
    with p.open("w", newline="", encoding="utf-8") as fh:
        fh.write("\ufeff")
        w = csv.writer(fh)
        w.writerow(CSV_HEADER)
        w.writerows(rows)
        fh.write("c-x,2021-03-14,too,many,cells,here,F,54,extra\n")
    with p.open("ab") as fh:  # raw bytes: undecodable note, then a cell over the row limit
        fh.write(b"c-y,2021-03-14,bad \xff bytes " + CANARY.encode() + b",K80.20,47562,Dr A,F,54\n")
        fh.write(b'c-z,2021-03-14,"' + b"x" * (oio.MAX_RECORD_BYTES + 10) + b'",K80.20,47562,Dr A,F,54\n')
        fh.write(b"c-last,2021-03-14,fine,K80.20,47562,Dr A,M,40\n")
    report = ingest.validate(p)
    n_rows = len(rows) + 4
    assert report.read == n_rows
    assert sorted(c.id for c in report.kept) == ["c-last", "c-ok"], [c.id for c in report.kept]
    assert len(report.kept) + len(report.rejected) == n_rows
    assert all(_clean(pr.reason) and _clean(pr.field or "") for pr, _ in report.rejected)
    assert report.kept[0].patient == {"age": 54, "sex": "F"}


def test_csv_header_problems_are_input_errors(tmp_path):
    for name, text in {"empty.csv": "", "dup.csv": "id,note,id\n1,a,2\n", "blank.csv": "\n\n"}.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(InputError) as e:
            ingest.validate(p)
        assert _clean(str(e.value))


# ---------------------------------------------------------------- Parquet
def test_parquet_reader_rejects_wrong_types_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 6
    table = pa.table({
        "id": ["p0", "p1", "p2", "p3", "p4", "p5"],
        "note": ["fine note", "x\x00" + CANARY, "ok", "ok", "ok", "ok"],
        "icd10": ["K80.20", "K80.20", CANARY, "K80.20", "K80.20", "K8O.2O"],
        "cpt": ["47562", "47562", "47562", "47562", "47562", "47562"],
        "service": [None, None, None, None, None, None],
        "date": ["2021-03-14", "2021-03-14", "2021-03-14", CANARY, "2021-03-14", "2021-03-14"],
        "age": [40, 41, 42, 43, 500, 44],
        "tags": [[CANARY]] * n,  # an unknown list column: kept under extra
    })
    p = tmp_path / "x.parquet"
    pq.write_table(table, p)
    report = ingest.validate(p)
    assert report.read == n and [c.id for c in report.kept] == ["p0"]
    assert report.kept[0].extra == {"tags": [CANARY]} and report.unknown_fields == {"tags": 1}
    assert all(_clean(pr.reason) for pr, _ in report.rejected)
    typed = pa.table({"id": [1, 2], "note": [123, 456], "icd10": [[1], [2]]})
    pq.write_table(typed, tmp_path / "typed.parquet")
    report = ingest.validate(tmp_path / "typed.parquet")
    assert report.read == 2 and not report.kept and {p.kind for p, _ in report.rejected} == {"wrong_type"}
    (tmp_path / "junk.parquet").write_bytes(b"PAR1" + CANARY.encode())
    with pytest.raises(InputError):
        ingest.validate(tmp_path / "junk.parquet")


# ---------------------------------------------------------------- configs, mappings, code lists
DOCS = {
    "dup.yaml": "id: a\nid: b\n",
    "dup.json": '{"a": 1, "a": 2}',
    "alias.yaml": "a: &x [1, 2]\nb: *x\n",
    "deep.yaml": "[" * 10000 + "]" * 10000,
    "deep.json": "[" * 10000 + "]" * 10000,
    "bigint.yaml": "n: " + "9" * 5000 + "\n",
    "bigint.json": '{"n": ' + "9" * 5000 + "}",
    "tab.yaml": "a:\n\t- " + CANARY + "\n",
    "badtag.yaml": "a: !!python/object:os.system " + CANARY + "\n",
    "trunc.json": '{"a": "' + CANARY,
    "surrogate.json": '{"a": "\\ud800' + CANARY + '"}',
    "nul.yaml": 'a: "\\0' + CANARY + '"\n',
    "nan.json": '{"a": NaN}',
    "listkey.yaml": "? [a, b]\n: 1\n",
    "colon.yaml": CANARY + ": : :\n  - x\n - y\n",
}


@pytest.mark.parametrize("name", sorted(DOCS))
def test_config_readers_raise_only_input_errors(name, tmp_path):
    p = tmp_path / name
    p.write_text(DOCS[name], encoding="utf-8")
    with pytest.raises(InputError) as e:
        oio.read_config(p)
    assert str(e.value).startswith(str(p)) and _clean(str(e.value))


def test_config_reader_bom_bytes_directory_and_mapping(tmp_path):
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert oio.read_json(tmp_path / "bom.json") == {"a": 1}
    (tmp_path / "latin.yaml").write_bytes(b"a: caf\xe9\n")
    with pytest.raises(InputError, match="not UTF-8"):
        oio.read_yaml(tmp_path / "latin.yaml")
    with pytest.raises(InputError, match="is a directory"):
        oio.read_json(tmp_path)
    (tmp_path / "map.yaml").write_text(f"note: [{CANARY}]\n")
    with pytest.raises(InputError) as e:
        ingest.load_mapping(tmp_path / "map.yaml")
    assert "got string: list" in str(e.value) and _clean(str(e.value))
    with pytest.raises(InputError) as e:
        ingest.load_mapping(pairs=[CANARY])
    assert _clean(str(e.value))


def test_code_list_reader(tmp_path):
    p = tmp_path / "codes.txt"
    p.write_bytes(b"\xef\xbb\xbf47562\tLap chole\n# comment\n")
    assert codes.load_code_list(p) == {"47562": "Lap chole"}
    p.write_bytes(b"47562\n" + CANARY.encode() + b"\n")
    with pytest.raises(InputError) as e:
        codes.load_code_list(p)
    assert e.value.line == 2 and _clean(str(e.value))
    p.write_bytes(b"47562\n\xff\xfe\n")
    with pytest.raises(InputError, match="not UTF-8"):
        codes.load_code_list(p)


# ---------------------------------------------------------------- hypothesis
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(allow_nan=False),
                 st.text(max_size=20), st.sampled_from([CANARY, "K80.20", "K8O.2O", "Z99.99", "47562", "80", "F",
                                                        "2021-03-14", "\ud800", "\x00"]))
JSONISH = st.recursive(LEAF, lambda c: st.one_of(st.lists(c, max_size=4),
                                                 st.dictionaries(st.sampled_from(
                                                     ["id", "note", "claim", "icd10", "providers", "lines", "cpt",
                                                      "modifiers", "name", "description", "patient", "age", "sex",
                                                      "date", "service", "extra", CANARY]), c, max_size=5)),
                       max_leaves=25)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_make_a_record_or_an_input_error(raw):
    try:
        obj = oio.parse_record(raw)
    except InputError as e:
        assert e.kind
        return
    assert isinstance(obj, dict)


@FUZZ
@given(JSONISH)
def test_any_json_value_makes_a_case_or_an_input_error(value):
    try:
        Case.from_dict(value)
    except InputError as e:
        assert _clean(str(e))
    if isinstance(value, dict):
        try:
            ingest._record_to_case(dict(value), __import__("collections").Counter(), None)
        except InputError as e:
            assert _clean(str(e))


@FUZZ
@given(st.one_of(st.text(max_size=60), LEAF))
def test_normalisers_show_a_value_only_when_code_shaped(value):
    for norm in (codes.normalize_icd10, codes.normalize_cpt, codes.normalize_modifier):
        try:
            norm(value)
        except CodeFormatError as e:
            assert _clean(str(e))
            if isinstance(value, str) and len(value.strip()) > 9:
                assert value.strip() not in str(e) or len(value.strip()) < 3


@FUZZ
@given(st.lists(st.lists(st.text(st.characters(exclude_categories=("Cs",)), max_size=12), min_size=1,
                         max_size=6), min_size=1, max_size=8))
def test_any_csv_rows_are_accounted_for(rows):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.csv")
        with open(p, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([["id", "note", "icd10", "cpt"], *rows])
        try:
            report = ingest.validate(p)
        except InputError:
            return
        assert len(report.kept) + len(report.rejected) == report.read


def test_claim_from_dict_rejects_types_not_coerces():
    bad = {"icd10": ["K80.20"], "providers": [{"name": "A", "lines": [{"cpt": "47562", "modifiers": {"x": "80"}}]}]}
    with pytest.raises(InputError, match="must be a list, got object"):
        Claim.from_dict(bad)


# ---------------------------------------------------------------- the CLI, end to end
def _validate(args, cwd, cli_env):
    return subprocess.run([opclaim_exe(), "data", "validate", *args], cwd=cwd, env=cli_env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_validate_on_all_malformed_records(jsonl, records, tmp_path, cli_env):
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text("stale from an earlier run\n")
    r = _validate([str(jsonl), "--rejects", str(rejects), "--summary", str(tmp_path / "s.json")], tmp_path, cli_env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and _clean(r.stdout + r.stderr)
    rows = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert len(rows) == len(records) and all(_clean(x["reason"]) for x in rows)
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["records"] == len(records) + 1 and s["valid"] + s["rejected"] == s["records"]


def test_cli_empty_input_and_directory_exit_2_and_remove_stale_rejects(tmp_path, cli_env):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\xef\xbb\xbf\n\n")
    stale = tmp_path / "empty.jsonl.rejects.jsonl"
    stale.write_text("stale\n")
    r = _validate([str(empty)], tmp_path, cli_env)
    assert r.returncode == 2 and "no records" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not stale.exists()
    r = _validate([str(tmp_path), "--rejects", str(tmp_path / "r.jsonl")], tmp_path, cli_env)
    assert r.returncode == 2 and "is a directory" in r.stderr and "Traceback" not in r.stderr, r.stderr
