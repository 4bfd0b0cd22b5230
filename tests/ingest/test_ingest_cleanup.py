"""opclaim.ingest, detail by detail (part 2): the clean-up rules and their counts, patient
columns, one record to a Case, and validate() over small files. Cases found by mutation testing
(docs/records/mutation.md). The helpers add to a Counter shared by a record's rules, so several tests
start from a counter that already holds counts."""

import datetime as dt
import json
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


# ---------------------------------------------------------------- patient
@pytest.mark.parametrize(
    "rec,want,consumed,counts",
    [
        (
            {"patient": {"age": "42", "sex": "female"}, "age": "9"},
            {"age": 42, "sex": "F"},
            set(),
            {"age_from_text": 1, "sex_code": 1},
        ),
        ({"patient": {"age": 42}}, {"age": 42}, set(), {}),
        ({"patient": {"sex": "M"}}, {"sex": "M"}, set(), {}),
        ({"patient": {"age": 42.0, "sex": 1}}, {"age": 42.0, "sex": 1}, set(), {}),  # wrong types: for Case
        ({"patient": "x", "age": "40"}, "x", set(), {}),
        (
            {"patient": None, "age": "40", "gender": "male"},
            {"age": 40, "sex": "M"},
            {"age", "gender"},
            {"age_from_text": 1, "sex_code": 1, "patient_from_columns": 1},
        ),
        (
            {"age": "40", "patient_age": "50", "sex": "F", "patient_sex": "M", "gender": "M"},
            {"age": 40, "sex": "F"},
            {"age", "sex"},
            {"age_from_text": 1, "patient_from_columns": 1},
        ),
        (
            {"patient_age": 50.0, "patient_sex": "u"},
            {"age": 50, "sex": "U"},
            {"patient_age", "patient_sex"},
            {"age_from_text": 1, "sex_code": 1, "patient_from_columns": 1},
        ),
        ({"gender": "F"}, {"sex": "F"}, {"gender"}, {"patient_from_columns": 1}),
        ({"age": 33}, {"age": 33}, {"age"}, {"patient_from_columns": 1}),
        ({"age": " ", "gender": None}, None, {"age", "gender"}, {}),
        ({"age": "", "sex": "F"}, {"sex": "F"}, {"age", "sex"}, {"patient_from_columns": 1}),
        ({"id": "r1"}, None, set(), {}),
    ],
)
def test_patient(rec, want, consumed, counts):
    base = Counter(age_from_text=1, sex_code=1, patient_from_columns=1)
    changes, got_consumed = Counter(base), {"id"}
    assert ingest._patient(rec, got_consumed, changes) == want
    assert got_consumed == {"id"} | consumed and changes == base + Counter(counts)


def test_patient_object_is_copied_and_bad_sex_raises():
    p = {"sex": "female"}
    assert ingest._patient({"patient": p}, set(), Counter()) == {"sex": "F"} and p == {"sex": "female"}
    e = _raises(ingest._patient, {"gender": "SECRET"}, set(), Counter())
    assert (e.field, e.kind) == ("patient.sex", "invalid_value")


# ---------------------------------------------------------------- one record -> Case
def _case(rec, changes=None, allow=True):
    return ingest._record_to_case(rec, Counter() if changes is None else changes, allow)


def test_record_with_a_claim_object_and_every_field():
    rec = {
        "id": "r1",
        "note": "Note.",
        "date": "03/14/2021",
        "service": "general",
        "style": "brief",
        "rationale": "why",
        "source": "ehr",
        "patient": {"age": "42"},
        "extra": {"a": 1},
        "mrn": "5",
        "icd10": "E11.9",
        "claim": {
            "icd10": ["k8020"],
            "providers": [{**SUR, "lines": [{"cpt": "47562", "modifiers": ["80"]}]}],
        },
    }
    changes = Counter(case=1)
    case, unknown = _case(rec, changes)
    assert unknown == ["mrn", "icd10"]  # with a claim object the flat icd10 column is not read
    assert case.to_dict() == {
        "id": "r1",
        "date": "2021-03-14",
        "service": "general",
        "note": "Note.",
        "claim": {
            "icd10": ["K80.20"],
            "providers": [{**SUR, "lines": [{"cpt": "47562", "modifiers": ["80"], "description": ""}]}],
        },
        "style": "brief",
        "patient": {"age": 42},
        "rationale": "why",
        "source": "ehr",
        "extra": {"a": 1, "mrn": "5", "icd10": "E11.9"},
    }
    assert changes == Counter(case=2, icd_dot=1, date_format=1, age_from_text=1)


def test_flat_row_builds_claim_patient_and_drops_blank_cells():
    rec = {
        "id": 7.0,
        "note": "N",
        "claim": " ",
        "icd10": "K80.20",
        "cpt": "47562-80",
        "provider": "Dr. X",
        "service": "",
        "style": " ",
        "rationale": None,
        "source": "s",
        "age": "50",
        "gender": "F",
        "mrn": 9,
    }
    changes = Counter()
    case, unknown = _case(rec, changes)
    assert unknown == ["mrn"]
    assert case.to_dict() == {
        "id": "7",
        "date": None,
        "service": None,
        "note": "N",
        "source": "s",
        "claim": {
            "icd10": ["K80.20"],
            "providers": [
                {
                    "name": "Dr. X",
                    "role": "surgeon",
                    "lines": [{"cpt": "47562", "modifiers": ["80"], "description": ""}],
                }
            ],
        },
        "patient": {"age": 50, "sex": "F"},
        "extra": {"mrn": 9},
    }
    assert changes == Counter(
        claim_from_columns=1, cpt_modifier_split=1, age_from_text=1, patient_from_columns=1
    )


def test_only_the_exact_field_names_are_read():
    names = ("id", "note", "claim", "date", "service", "style", "rationale", "source", "patient", "extra")
    others = [n.upper() for n in names] + [f"XX{n}XX" for n in names]  # case matters; nothing else is a field
    rec = {"id": "r", "note": "N", "icd10": "K80.20", **{n: i for i, n in enumerate(others)}}
    case, unknown = _case(rec)
    assert unknown == others and case.extra == {n: i for i, n in enumerate(others)}


def test_claim_as_json_text_and_partial_claims():
    case, unknown = _case({"id": "r", "note": "N", "claim": '{"icd10": ["K80.20"]}', "x": 1})
    assert case.claim.to_dict() == {"icd10": ["K80.20"], "providers": []} and unknown == ["x"]
    assert case.extra == {"x": 1}
    case, _ = _case({"id": "r", "note": "N", "claim": {"providers": [{"lines": [{"cpt": "47562"}]}]}})
    assert case.claim.cpt_set() == {"47562"} and case.claim.icd10 == []
    case, unknown = _case({"id": 3, "note": "N", "cpt": "47562"})
    assert case.id == "3" and case.claim.cpt_set() == {"47562"} and unknown == [] and case.extra == {}


@pytest.mark.parametrize(
    "rec,reason,fld,kind",
    [
        (
            {"claim": '{"icd10": ['},
            "malformed JSON (Expecting value, column 12)",
            "claim",
            "malformed_record",
        ),
        ({"claim": {"icd10": [], "providers": []}}, "missing or empty", "claim", "missing_claim"),
        ({"claim": {}}, "missing or empty", "claim", "missing_claim"),
        ({"icd10": "", "cpt": ""}, "missing", "claim", "missing_claim"),
        ({"claim": 5}, "must be an object, got integer", "claim", "wrong_type"),
        ({"date": "nope"}, "unparseable date", "date", "bad_date"),
        ({"date": 5}, "date must be a string, got integer", "date", "bad_date"),
        ({"extra": 5}, "must be an object, got integer", "extra", "wrong_type"),
        ({"id": 7.5}, "must be a string (or integer), got number", "id", "wrong_type"),
        (
            {"gender": "zz"},
            "unrecognised value; expected F, M or U (or female, male, unknown, other)",
            "patient.sex",
            "invalid_value",
        ),
    ],
)
def test_record_errors_name_the_field(rec, reason, fld, kind):
    base = {"id": "r", "note": "N", "icd10": "K80.20"}
    e = _raises(_case, {**base, **rec})
    # claim.py words the extra error "must be a object" (its typo, not pinned here)
    assert (e.reason.replace("a object", "an object"), e.field, e.kind) == (reason, fld, kind)


def _release_check(monkeypatch):
    """check_icd10_known recorded instead of run (the release table takes seconds to load): every
    Z99 code is unknown. The real check: test_data_validate.py."""
    from opclaim import claim as claim_mod
    from opclaim.errors import CodeFormatError

    calls = []

    def check(code, allow):
        calls.append((code, allow))
        if not allow and code.startswith("Z99"):
            raise CodeFormatError("not in the release", kind="unknown_code")

    monkeypatch.setattr(claim_mod, "check_icd10_known", check)
    return calls


def test_allow_unknown_icd_is_passed_to_the_release_check(monkeypatch):
    calls = _release_check(monkeypatch)
    rec = {"id": "r", "note": "N", "icd10": "Z99.99"}
    assert _case(rec, allow=True)[0].claim.icd10 == ["Z99.99"] and calls == []
    e = _raises(_case, rec, allow=False)
    assert (e.field, e.kind, calls) == ("claim.icd10[0]", "unknown_code", [("Z99.99", False)])


# ---------------------------------------------------------------- validate
def _rec(rid, note="One two three.", **kw):
    return {
        "id": rid,
        "note": note,
        "claim": {
            "icd10": ["K80.20"],
            "providers": [{**SUR, "lines": [{"cpt": "47562", "modifiers": kw.pop("mods", [])}]}],
        },
        **kw,
    }


def _jsonl(tmp_path, lines, name="in.jsonl"):
    p = tmp_path / name
    p.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8"
    )
    return p


def test_validate_keeps_flags_and_rejects_each_record_once(tmp_path, monkeypatch):
    calls = _release_check(monkeypatch)
    rows = [
        _rec("r1", date="03/14/2021", mrn=1),  # 1: kept; date rewritten; mrn unknown
        "{bad json",  # 2
        _rec("r2", date="nope"),  # 3
        _rec("r1"),  # 4: duplicate of line 1
        _rec("r3", mods=["51"]),  # 5: 51 is not in the modifier list given
        _rec("r4", note="One two three four."),  # 6: 5 tokens > 4: flagged, kept
        _rec("r5", patient={"sex": "zz"}),  # 7
        _rec(
            "r6", note="One two three"
        ),  # 8: kept (the others' notes are 4 tokens: at the limit, not flagged)
        # 9: a code of the wrong type (modifiers and icd10 given: clean_claim fills them in the record it
        # rejects too, see the report on reject records)
        {**_rec("r7"), "claim": {"icd10": [], "providers": [{"lines": [{"cpt": True, "modifiers": []}]}]}},
        _rec("r8", mods=["rt"], mrn=2, Zeta=3),  # 10: kept
        {**_rec("r9"), "claim": {"icd10": ["Z99.99"]}},  # 11: not in the release (the stand-in's verdict)
    ]
    p = _jsonl(tmp_path, rows)
    report = ingest.validate(str(p), max_tokens=4, modifiers={"80", "RT"}, allow_unknown_icd=False)
    # lines 1, 4, 5, 6, 8, 10, 11: the records that got as far as Case.from_dict with a code
    assert calls == [("K80.20", False)] * 6 + [("Z99.99", False)]
    assert (report.file, report.fmt, report.read) == (str(p), "jsonl", 11)
    assert [c.id for c in report.kept] == ["r1", "r4", "r6", "r8"]
    assert report.kept[0].date == "2021-03-14" and report.kept[3].claim.providers[0].lines[0].modifiers == [
        "RT"
    ]
    pr = ingest.Problem
    mods = "claim.providers[0].lines[0].modifiers[0]"
    assert [p for p, _ in report.rejected] == [
        pr(
            2,
            None,
            "malformed JSON (Expecting property name enclosed in double quotes, column 2)",
            "malformed_record",
        ),
        pr(3, "date", "unparseable date", "bad_date", "r2"),
        pr(4, "id", "duplicate id (first on line 1)", "duplicate_id", "r1"),
        pr(5, mods, "unknown modifier '51'", "unknown_modifier", "r3"),
        pr(
            7,
            "patient.sex",
            "unrecognised value; expected F, M or U (or female, male, unknown, other)",
            "invalid_value",
            "r5",
        ),
        pr(
            9,
            "claim.providers[0].lines[0].cpt",
            "CPT/HCPCS code must be a string, got boolean",
            "malformed_code",
            "r7",
        ),
        pr(11, "claim.icd10[0]", "not in the release", "unknown_code", "r9"),
    ]
    assert [r for _, r in report.rejected] == [None, rows[2], rows[3], rows[4], rows[6], rows[8], rows[10]]
    assert report.flagged == [
        (pr(6, "note", "note is 5 tokens, over the limit of 4", "over_token_limit", "r4"), "r4")
    ]
    assert report.changes == Counter(date_format=1, case=1)  # from kept records only
    assert report.unknown_fields == Counter(mrn=2, Zeta=1)


def test_validate_default_modifiers_tokenizer_and_one_record(tmp_path):
    p = _jsonl(tmp_path, [_rec("r1", note="abcdef", mods=["51", "RT"])])
    report = ingest.validate(p, max_tokens=4, allow_unknown_icd=True)
    assert [c.id for c in report.kept] == ["r1"] and report.flagged == [] and report.rejected == []

    def tok(text, add_special_tokens):  # one token per character
        assert add_special_tokens is False
        return {"input_ids": list(range(len(text)))}

    report = ingest.validate(p, max_tokens=4, tokenizer=tok, allow_unknown_icd=True)
    assert [(x.where, x.reason) for x, _ in report.flagged] == [(1, "note is 6 tokens, over the limit of 4")]


@pytest.mark.parametrize(
    "rid,want", [("r1", "r1"), (7, "7"), (True, None), ("  ", None), ([1], None), (None, None)]
)
def test_reject_names_the_record_id_when_it_has_one(tmp_path, rid, want):
    rec = _rec(rid, date="nope")
    p = _jsonl(tmp_path, [rec if rid is not None else {k: v for k, v in rec.items() if k != "id"}])
    ((problem, _),) = ingest.validate(p, allow_unknown_icd=True).rejected
    assert (problem.reason, problem.id) == ("unparseable date", want)


def test_validate_csv_with_mapping_format_and_reader_problems(tmp_path):
    p = tmp_path / "export.txt"
    p.write_text(
        "enc,text,dx,proc,when\ne1,Note one.,K80.20,47562,2021-03-14\ne2,bad\x00,K80.20,47562,\n"
        "e3,Note three.,K80.20,47562,nope\n",
        encoding="utf-8",
    )
    report = ingest.validate(
        p,
        fmt="csv",
        allow_unknown_icd=True,
        mapping=ingest.load_mapping(pairs=["id=enc", "note=text", "icd10=dx", "cpt=proc", "date=when"]),
    )
    assert (report.file, report.fmt, report.read) == (str(p), "csv", 3)
    assert [(c.id, c.date, c.note) for c in report.kept] == [("e1", "2021-03-14", "Note one.")]
    pr = ingest.Problem
    assert report.rejected == [
        (pr(3, "text", "text contains a NUL character", "bad_text"), None),
        (
            pr(4, "date", "unparseable date", "bad_date", "e3"),
            {"enc": "e3", "text": "Note three.", "dx": "K80.20", "proc": "47562", "when": "nope"},
        ),  # as read
    ]
    assert report.changes == Counter(claim_from_columns=1) and report.unknown_fields == Counter()
    assert report.summary()["cleanup"] == {"claim_from_columns": 1}


@pytest.mark.parametrize("name,text", [("e.jsonl", "\n\n"), ("e.csv", "id,note\n")])
def test_a_file_without_records_is_an_input_error(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    e = _raises(ingest.validate, p)
    assert (e.reason, e.file, e.kind) == ("no records", p, "no_records")


def test_a_rejected_record_keeps_its_claim_as_written(tmp_path):
    """clean_claim works on a copy: the rejects file carries the record as it was in the input,
    not with its codes already cleaned (a JSONL claim object, as a Parquet one)."""
    import json

    from opclaim.ingest import reject_rows, validate

    raw = {"id": "r", "note": "n", "claim": {"icd10": ["k8020"], "providers": [{"lines": [{"cpt": "47562-8O"}]}]}}
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps(raw) + "\n", encoding="utf-8")
    (rej,) = reject_rows(validate(f))
    assert rej["defect"] == "unknown_modifier" and rej["record"] == raw
