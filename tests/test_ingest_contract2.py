"""opclaim.ingest, detail by detail (part 2): the clean-up rules and their counts, patient
columns, one record to a Case, and validate() over small files. Cases found by mutation testing
(docs/mutation.md). The helpers add to a Counter shared by a record's rules, so several tests
start from a counter that already holds counts."""

import datetime as dt
from collections import Counter

import pytest

from opclaim import ingest
from opclaim.errors import InputError

SUR = {"name": "Dr. B", "role": "surgeon"}


def _raises(fn, *args, **kw) -> InputError:
    with pytest.raises(InputError) as e:
        fn(*args, **kw)
    return e.value


# ---------------------------------------------------------------- mapping, formats
def test_apply_mapping_renames_and_drops_the_source_column():
    raw = {"text": "n", "enc": "e1", "id": "old", "x": 1}
    assert ingest._apply_mapping(raw, {}) is raw
    assert ingest._apply_mapping(raw, {"note": "text", "id": "enc", "date": "absent"}) == {
        "note": "n",
        "id": "e1",
        "x": 1,
    }
    assert ingest._apply_mapping(raw, {"id": "id"}) == raw  # a field mapped to itself stays
    # two fields read from one column
    assert ingest._apply_mapping({"c": "v"}, {"note": "c", "rationale": "c"}) == {
        "note": "v",
        "rationale": "v",
    }
    assert raw == {"text": "n", "enc": "e1", "id": "old", "x": 1}  # the input is not changed


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("a.jsonl", "jsonl"),
        ("a.JSON", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.csv", "csv"),
        ("a.TSV", "csv"),
        ("a.parquet", "parquet"),
        ("a.PQ", "parquet"),
    ],
)
def test_detect_format_by_suffix(tmp_path, name, fmt):
    assert ingest.detect_format(tmp_path / name) == fmt
    assert ingest.detect_format(tmp_path / name, "csv") == "csv"


def test_unknown_suffix_and_format_flag(tmp_path):
    p = tmp_path / "a.txt"
    e = _raises(ingest.detect_format, p)
    assert (e.reason, e.file) == ("unknown file type; use .jsonl, .csv or .parquet (or --format)", p)
    p.write_text("id,note\nr1,n\n")
    records, kind = ingest.read_raw(str(p), "csv")
    assert kind == "csv" and [(r.where, r.data) for r in records] == [(2, {"id": "r1", "note": "n"})]
    e = _raises(ingest.read_raw, tmp_path / "missing.csv")
    assert (e.reason, e.file) == ("file not found", tmp_path / "missing.csv")


def test_read_raw_picks_the_reader(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"id": "j"}\n')
    (tmp_path / "a.csv").write_text("id\nc\n")
    pq.write_table(pa.table({"id": ["p"]}), tmp_path / "a.parquet")
    for name, kind, where in (("a.jsonl", "jsonl", 1), ("a.csv", "csv", 2), ("a.parquet", "parquet", 1)):
        records, got = ingest.read_raw(tmp_path / name)
        assert got == kind and [(r.where, r.data) for r in records] == [(where, {"id": kind[0]})]


# ---------------------------------------------------------------- clean-up rules
@pytest.mark.parametrize(
    "code,want,counts",
    [
        ("K80.20", "K80.20", {}),
        (" k80.20 ", "K80.20", {"whitespace": 1, "case": 1}),
        ("K80 20", "K80.20", {"whitespace": 1, "icd_dot": 1}),
        ("k8020", "K80.20", {"case": 1, "icd_dot": 1}),
        ("K80", "K80", {}),
        ("hello", "HELLO", {"case": 1}),  # not ICD-shaped: left for Claim.from_dict to reject
        (5, 5, {}),
    ],
)
def test_clean_icd(code, want, counts):
    changes = Counter(whitespace=1, case=1, icd_dot=1)
    assert ingest._clean_icd(code, changes) == want
    assert changes == Counter(whitespace=1, case=1, icd_dot=1) + Counter(counts)


def test_trim_upper_counts_each_kind_once_per_value():
    changes = Counter(whitespace=2, case=2)
    assert ingest._trim_upper(" rt ", changes) == "RT"
    assert ingest._trim_upper("RT", changes) == "RT" and ingest._trim_upper("lt", changes) == "LT"
    assert ingest._trim_upper(" 80", changes) == "80"
    assert changes == Counter(whitespace=4, case=4)


@pytest.mark.parametrize(
    "code,mods,want,counts",
    [
        (47562, [], ("47562", []), {"cpt_number": 1}),
        (10000, [], ("10000", []), {"cpt_number": 1}),
        (99999, ["RT"], ("99999", ["RT"]), {"cpt_number": 1}),
        (9999, [], (9999, []), {}),
        (100000, [], (100000, []), {}),
        (True, [], (True, []), {}),
        (
            " cpt 47562-80 ",
            ["RT"],
            ("47562", ["RT", "80"]),
            {"whitespace": 1, "case": 1, "cpt_prefix": 1, "cpt_modifier_split": 1},
        ),
        ("HCPCS: 47562", [], ("47562", []), {"cpt_prefix": 1}),
        ("47562-80-51", [], ("47562", ["80", "51"]), {"cpt_modifier_split": 1}),
        ("47562- 80", [], ("47562", ["80"]), {"cpt_modifier_split": 1}),
        ("47562-", [], ("47562-", []), {}),  # no modifier after the dash: left for Claim.from_dict
        ("ABC-80", [], ("ABC-80", []), {}),  # not a CPT code before the dash
    ],
)
def test_clean_cpt(code, mods, want, counts):
    base = Counter(whitespace=1, case=1, cpt_number=1, cpt_prefix=1, cpt_modifier_split=1)
    changes = Counter(base)
    assert ingest._clean_cpt(code, mods, changes) == want
    assert changes == base + Counter(counts)


def test_clean_cpt_keeps_the_callers_list():
    mods = ["RT"]
    assert ingest._clean_cpt("47562-80", mods, Counter()) == ("47562", ["RT", "80"]) and mods == ["RT"]


@pytest.mark.parametrize(
    "mods,want,counts",
    [
        ("80, 51", ["80", "51"], {"modifiers_from_text": 1}),
        ("rt 80,,51", ["RT", "80", "51"], {"modifiers_from_text": 1, "case": 1}),
        ("", [], {"modifiers_from_text": 1}),
        ([" rt", 80, None], ["RT", 80, None], {"whitespace": 1, "case": 1}),
        (None, None, {}),
        (5, 5, {}),
    ],
)
def test_clean_mods(mods, want, counts):
    changes = Counter(modifiers_from_text=1)
    assert ingest._clean_mods(mods, changes) == want
    assert changes == Counter(modifiers_from_text=1) + Counter(counts)


def test_clean_claim_codes_duplicates_and_lines():
    changes = Counter(duplicate_code=1)
    claim = {
        "icd10": ["k8020", "K80.20", 5, 5, ["K80"], {"a": 1}, "E11.9", "e119"],
        "providers": [
            "not an object",
            {
                "name": "A",
                "lines": [
                    "x",
                    {"cpt": "47562-80", "modifiers": 5},
                    {"cpt": " 44970", "modifiers": "rt"},
                    {"modifiers": ["80"]},
                    {"cpt": "cpt 47562", "modifiers": ["51"]},
                ],
            },
            {"name": "B"},
        ],
    }
    out = ingest.clean_claim(claim, changes)
    assert out is claim
    assert claim == {
        "icd10": ["K80.20", 5, 5, ["K80"], {"a": 1}, "E11.9"],  # only code strings are de-duplicated
        "providers": [
            "not an object",
            {
                "name": "A",
                "lines": [
                    "x",
                    {"cpt": "47562-80", "modifiers": 5},  # a wrong type: left as it is
                    {"cpt": "44970", "modifiers": ["RT"]},
                    {"cpt": "", "modifiers": ["80"]},
                    {"cpt": "47562", "modifiers": ["51"]},
                ],
            },
            {"name": "B"},
        ],
    }
    assert changes == Counter(
        duplicate_code=3, case=4, icd_dot=2, whitespace=1, modifiers_from_text=1, cpt_prefix=1
    )


def test_clean_claim_of_other_values():
    assert ingest.clean_claim(None, Counter()) is None and ingest.clean_claim("x", Counter()) == "x"
    assert ingest.clean_claim({"providers": None}, Counter()) == {"providers": None, "icd10": []}
    assert ingest.clean_claim({"icd10": "K80.20"}, Counter()) == {"icd10": "K80.20"}  # a wrong type: as it is
    line = {"cpt": "47562"}
    ingest.clean_claim({"providers": [{"lines": [line]}]}, Counter())
    assert line == {"cpt": "47562", "modifiers": []}


@pytest.mark.parametrize(
    "rec,want",
    [
        ({}, None),
        ({"icd10": "", "cpt": "", "provider": "Dr. X"}, None),
        ({"icd10": "K80.20; E11.9"}, {"icd10": ["K80.20", "E11.9"], "providers": []}),
        (
            {"cpt": "47562|44970"},
            {
                "icd10": [],
                "providers": [
                    {
                        "name": "Unknown",
                        "role": "surgeon",
                        "lines": [
                            {"cpt": "47562", "modifiers": [], "description": ""},
                            {"cpt": "44970", "modifiers": [], "description": ""},
                        ],
                    }
                ],
            },
        ),
        (
            {"icd10": "K80.20", "cpt": "47562", "provider": " Dr. X "},
            {
                "icd10": ["K80.20"],
                "providers": [
                    {
                        "name": "Dr. X",
                        "role": "surgeon",
                        "lines": [{"cpt": "47562", "modifiers": [], "description": ""}],
                    }
                ],
            },
        ),
    ],
)
def test_claim_from_columns(rec, want):
    changes = Counter(claim_from_columns=1)
    assert ingest._claim_from_columns(rec, changes) == want
    assert changes == Counter(claim_from_columns=1 + (want is not None))


@pytest.mark.parametrize("provider,name", [(" ", "Unknown"), ("", "Unknown"), (None, "Unknown"), (7, 7)])
def test_claim_from_columns_provider_name(provider, name):
    claim = ingest._claim_from_columns({"cpt": "47562", "provider": provider}, Counter())
    assert claim["providers"][0]["name"] == name  # a number is left for Claim.from_dict to reject


@pytest.mark.parametrize(
    "value,want,counted",
    [
        (None, (None, None), False),
        ("  ", (None, None), False),
        ("2021-03-14", ("2021-03-14", None), False),
        (" 2021-03-14 ", ("2021-03-14", None), False),
        ("03/14/2021", ("2021-03-14", None), True),
        ("2021/03/14", ("2021-03-14", None), True),
        ("03/14/21", ("2021-03-14", None), True),
        ("14-Mar-2021", ("2021-03-14", None), True),
        ("20210314", ("2021-03-14", None), True),
        ("2021-03-14T10:30:00", ("2021-03-14", None), True),
        ("2021-03-14 10:30", ("2021-03-14", None), True),
        ("2021-03-14T", ("2021-03-14", None), True),
        ("2021-03-14X10", (None, "unparseable date"), False),
        ("2021-03-14t10", (None, "unparseable date"), False),
        ("2021-03-14junk", (None, "unparseable date"), False),
        ("2021-13-45", (None, "unparseable date"), False),
        (dt.date(2021, 3, 14), ("2021-03-14", None), False),
        (dt.datetime(2021, 3, 14, 10, 30), ("2021-03-14", None), False),
        (20210314, (None, "date must be a string, got integer"), False),
        ([], (None, "date must be a string, got list"), False),
    ],
)
def test_clean_date(value, want, counted):
    changes = Counter(date_format=1)
    assert ingest.clean_date(value, changes) == want
    assert changes == Counter(date_format=1 + counted)


def test_blank():
    assert [ingest._blank(v) for v in (None, "", " \t", "x", 0, [], False)] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_check_modifiers_names_the_first_unknown_one():
    known = {"80", "RT"}
    claim = {
        "providers": [
            None,
            {"lines": None},
            {"lines": [None, {"modifiers": None}, {"modifiers": ["80", "rt", 5, "RTX", "ZZ", "QQ"]}]},
        ]
    }
    assert ingest._check_modifiers(claim, known) == (
        "unknown modifier 'ZZ'",
        "claim.providers[2].lines[2].modifiers[4]",
        "unknown_modifier",
    )
    assert ingest._check_modifiers({"providers": [{"lines": [{"modifiers": ["80", "RT"]}]}]}, known) is None
    assert ingest._check_modifiers({}, known) is None
