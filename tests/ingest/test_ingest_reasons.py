"""opclaim.ingest, detail by detail: the defect class each reason maps to, age and sex cells, and
the report summary. Cases found by mutation testing (docs/records/mutation.md); whole files through
validate() are test_data_validate.py."""

from collections import Counter

import pytest

from opclaim import ingest
from opclaim import io as oio
from opclaim.errors import InputError

MODS = "claim.providers[0].lines[0].modifiers[0]"


@pytest.mark.parametrize(
    "reason,fld,kind",
    [
        ("bytes that are not UTF-8", "note", "non_utf8"),
        ("invalid JSON", None, "malformed_record"),
        ("row has more cells than the header", None, "malformed_record"),
        ("missing", "id", "missing_id"),
        ("empty", "note", "missing_note"),
        ("missing or empty", "claim", "missing_claim"),
        ("missing", "service", "invalid_record"),  # only id, note and claim have a "missing" class
        ("duplicate id (first on line 2)", "id", "duplicate_id"),
        ("unparseable date", "date", "bad_date"),
        ("unknown modifier 'ZZ'", MODS, "unknown_modifier"),  # before the modifiers-field rule
        ("malformed code", None, "malformed_code"),
        ("must be a string", "claim.icd10[0]", "malformed_code"),
        ("must be a string", "claim.providers[0].lines[0].cpt", "malformed_code"),
        ("must be a list", "claim.providers[0].lines[0].modifiers", "malformed_code"),
        ("must be a string", "claim.providers[0].name", "invalid_record"),
        ("something else", None, "invalid_record"),
    ],
)
def test_defect_class_of_each_reason(reason, fld, kind):
    assert ingest._kind(reason, fld) == kind


@pytest.mark.parametrize(
    "value,want,counted",
    [
        ("42", 42, True),
        (" 7 ", 7, True),
        ("1234", "1234", False),
        ("4a", "4a", False),
        (42.0, 42, True),
        (0.0, 0, True),
        (1000.0, 1000, True),
        (1001.0, 1001.0, False),
        (-1.0, -1.0, False),
        (42.5, 42.5, False),
        (42, 42, False),
    ],
)
def test_age_cells(value, want, counted):
    changes = Counter()
    got = ingest._age(value, changes)
    assert got == want and type(got) is type(want)
    assert changes == (Counter(age_from_text=1) if counted else Counter())


@pytest.mark.parametrize(
    "value,want,counted",
    [
        ("F", "F", False),
        ("M", "M", False),
        ("U", "U", False),
        ("female", "F", True),
        (" Male ", "M", True),
        ("other", "U", True),
        ("n/a", "U", True),
        (1, 1, False),
    ],
)
def test_sex_cells(value, want, counted):
    changes = Counter()
    assert ingest._sex(value, changes) == want
    assert changes == (Counter(sex_code=1) if counted else Counter())


def test_age_and_sex_add_to_the_count_already_there():
    changes = Counter(age_from_text=2, sex_code=3)
    assert ingest._age("40", changes) == 40 and ingest._age(40.0, changes) == 40
    assert ingest._sex("male", changes) == "M"
    assert changes == Counter(age_from_text=4, sex_code=4)


def test_unknown_sex_is_an_invalid_value_of_patient_sex():
    with pytest.raises(InputError) as e:
        ingest._sex("zz", Counter())
    assert (e.value.field, e.value.kind) == ("patient.sex", "invalid_value")
    assert e.value.reason == "unrecognised value; expected F, M or U (or female, male, unknown, other)"


def test_report_summary_and_defect_counts():
    p = ingest.Problem
    r = ingest.Report("in.csv", "csv", read=5)
    r.rejected = [
        (p(2, "id", "missing", "missing_id"), {}),
        (p(3, None, "bad", "malformed_record"), None),
        (p(4, "id", "missing", "missing_id"), {}),
    ]
    r.flagged = [(p(5, "note", "long", "over_token_limit", "c5"), "c5")]
    r.changes = Counter(case=2, whitespace=1, not_a_rule=9)
    r.unknown_fields = Counter(zeta=1, alpha=2)
    assert r.defect_counts() == Counter(missing_id=2, malformed_record=1, over_token_limit=1)
    s = r.summary()
    assert s == {
        "file": "in.csv",
        "format": "csv",
        "records": 5,
        "valid": 0,
        "rejected": 3,
        "flagged": 1,
        "defects": {"malformed_record": 1, "missing_id": 2, "over_token_limit": 1},
        "cleanup": {"whitespace": 1, "case": 2},
        "unknown_fields": {"alpha": 2, "zeta": 1},
    }
    assert list(s["defects"]) == sorted(s["defects"]) and list(s["cleanup"]) == ["whitespace", "case"]


def test_report_defect_counts_add_rejects_and_flags_of_one_kind():
    p = ingest.Problem
    r = ingest.Report("f", "jsonl")
    r.rejected = [(p(2, "note", "x", "over_token_limit"), None)]
    r.flagged = [
        (p(3, "note", "y", "over_token_limit", "a"), "a"),
        (p(4, "note", "y", "over_token_limit", "b"), "b"),
    ]
    assert r.defect_counts() == Counter(over_token_limit=3)


def test_reject_rows_name_file_line_field_reason_and_id_sorted_by_line():
    p = ingest.Problem
    r = ingest.Report("in.jsonl", "jsonl")
    raw = {"id": "r4", "note": "n"}
    r.rejected = [
        (p(4, "date", "unparseable date", "bad_date", "r4"), raw),
        (p(2, None, "malformed", "malformed_record"), None),
    ]
    r.flagged = [(p(3, "note", "note is 9 tokens, over the limit of 5", "over_token_limit", "r3"), "r3")]
    assert ingest.reject_rows(r) == [
        {
            "file": "in.jsonl",
            "line": 2,
            "field": None,
            "defect": "malformed_record",
            "reason": "malformed",
            "id": None,
            "action": "rejected",
            "record": None,
        },
        {
            "file": "in.jsonl",
            "line": 3,
            "field": "note",
            "defect": "over_token_limit",
            "reason": "note is 9 tokens, over the limit of 5",
            "id": "r3",
            "action": "flagged",
        },
        {
            "file": "in.jsonl",
            "line": 4,
            "field": "date",
            "defect": "bad_date",
            "reason": "unparseable date",
            "id": "r4",
            "action": "rejected",
            "record": raw,
        },
    ]


# ---------------------------------------------------------------- column mapping
def _raises(fn, *args, **kw) -> InputError:
    with pytest.raises(InputError) as e:
        fn(*args, **kw)
    return e.value


def test_mapping_file_must_be_a_mapping_of_strings(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("- id\n- note\n")
    e = _raises(ingest.load_mapping, y)
    assert (e.reason, e.file, e.field) == ("must be a mapping of field: column, got list", y, None)
    y.write_text("note: text\nid: 5\n")
    e = _raises(ingest.load_mapping, y)
    assert (e.reason, e.file, e.field) == (
        "field and column must be strings, got string: integer (quote numbers)",
        y,
        "id",
    )
    y.write_text("5: text\n")
    e = _raises(ingest.load_mapping, y)
    assert (e.reason, e.field) == (
        "field and column must be strings, got integer: string (quote numbers)",
        "<key of 1 characters>",
    )
    y.write_text("")  # an empty file is an empty mapping
    assert ingest.load_mapping(y) == {}
    y.write_text("note: text\nid: enc\n")
    assert ingest.load_mapping(y, ["id=encounter"]) == {"note": "text", "id": "encounter"}  # flags win


def test_mapping_file_errors_say_column_mapping(tmp_path):
    e = _raises(ingest.load_mapping, tmp_path / "nope.yaml")
    assert (e.reason, e.file) == ("column mapping not found", tmp_path / "nope.yaml")
    y = tmp_path / "m.yaml"
    y.write_text("id: [unclosed\n")
    assert _raises(ingest.load_mapping, y).reason.startswith("unreadable column mapping: not valid YAML")


@pytest.mark.parametrize("pair", ["no-equals", "id=", "=col", " = ", "id= "])
def test_map_flag_needs_field_and_column(pair):
    e = _raises(ingest.load_mapping, pairs=[pair])
    assert (e.reason, e.field, e.file) == ("--map expects FIELD=COLUMN", "--map", None)


def test_map_flag_splits_at_the_first_equals_and_strips():
    assert ingest.load_mapping(pairs=[" note = text=body ", "id=enc"]) == {"note": "text=body", "id": "enc"}


def test_unknown_mapping_fields_are_named_sorted_with_the_known_list():
    e = _raises(ingest.load_mapping, pairs=["zeta=z", "diagnosis=dx", "id=enc"])
    known = (
        "id, date, service, note, claim, icd10, cpt, provider, style, patient, age, sex, rationale, source"
    )
    assert e.reason == f"unknown field(s) in column mapping: diagnosis, zeta; known: {known}"
    assert (e.field, e.file) == (None, None)


# ---------------------------------------------------------------- readers
def _csv(tmp_path, data, name="x.csv"):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


def _rows(reader, path):
    return [(r.where, r.data, r.problem) for r in reader(path)]


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "CSV has no header row"),
        (b" , \nr1,n\n", "CSV has no header row"),
        (b"n\xffote,id\nr1,x\n", "CSV header has bytes that are not UTF-8"),  # not only the last cell
    ],
)
def test_csv_header_errors_name_file_and_line_1(tmp_path, data, reason):
    p = _csv(tmp_path, data)
    e = _raises(list, ingest.read_csv(p))
    assert (e.reason, e.file, e.line, e.kind) == (reason, p, 1, None)


def test_csv_duplicate_header_names_each_once(tmp_path):
    p = _csv(tmp_path, "b,a,b,a,c\n1,2,3,4,5\n")
    e = _raises(list, ingest.read_csv(p))
    assert (e.reason, e.file, e.line, e.kind) == (
        "duplicate column name(s) in the header: a, b",
        p,
        1,
        "duplicate_key",
    )
    p = _csv(tmp_path, "id,note,id\n1,2,3\n")
    assert _raises(list, ingest.read_csv(p)).reason == "duplicate column name(s) in the header: id"


@pytest.fixture
def small_limits(monkeypatch):
    """The io limits made small (the rules, not the sizes, are under test); csv's field limit restored."""
    import csv

    old = csv.field_size_limit()
    monkeypatch.setattr(oio, "MAX_RECORD_BYTES", 1000)
    monkeypatch.setattr(oio, "MAX_STRING_CHARS", 400)
    yield
    csv.field_size_limit(old)


def test_csv_header_cell_over_the_limit_is_unreadable(tmp_path, small_limits):
    big = oio.MAX_RECORD_BYTES + 2
    p = _csv(tmp_path, "x" * big + "\n")
    e = _raises(list, ingest.read_csv(p))
    assert (e.reason, e.file, e.line) == (
        f"unreadable CSV header (field larger than field limit ({big - 1}))",
        p,
        1,
    )


def test_csv_rows_blank_lines_short_rows_and_line_numbers(tmp_path):
    p = _csv(
        tmp_path,
        '\ufeffid,note,extra\r\nr1,"two\r\nlines"\r\n\r\n \r\n,x\r\nr2,short\r\nr3,a,b,c\r\nr4,n,e\r\n',
    )
    assert _rows(ingest.read_csv, p) == [
        (2, {"id": "r1", "note": "two\r\nlines"}, None),  # BOM dropped; a quoted cell keeps its \r\n
        (6, {"id": "", "note": "x"}, None),
        (7, {"id": "r2", "note": "short"}, None),  # a short row: the missing cell is absent
        (8, None, ("row has more cells than the header", None, "malformed_record")),
        (9, {"id": "r4", "note": "n", "extra": "e"}, None),
    ]
    assert _rows(ingest.read_csv, _csv(tmp_path, "id\nr1\n \nr2\n")) == [
        (2, {"id": "r1"}, None),
        (4, {"id": "r2"}, None),
    ]


def test_csv_cell_and_row_limits(tmp_path, small_limits):
    lim = oio.MAX_RECORD_BYTES
    p = _csv(tmp_path, "id,note\n" + "r1," + "x" * (lim + 2) + "\nr2,ok\n")
    assert _rows(ingest.read_csv, p) == [
        (2, None, (f"cell over the limit of {lim} characters", None, "over_limit")),
        (3, {"id": "r2", "note": "ok"}, None),
    ]
    # a cell of exactly the limit is read; the row is then over the row limit
    p = _csv(tmp_path, "id,note\nr1," + "x" * lim + "\n")
    ((n, data, problem),) = _rows(ingest.read_csv, p)
    assert (n, data, problem[1:]) == (2, None, (None, "over_limit"))
    assert problem[0] == f"row of {lim + 2} characters, over the limit of {lim}"
    a, b = oio.MAX_STRING_CHARS, lim - 2 - 2 * oio.MAX_STRING_CHARS  # a row of exactly the limit is fine
    p = _csv(tmp_path, "a,b,c,d\nr1," + "x" * a + "," + "y" * a + "," + "z" * b + "\n")
    ((n, data, problem),) = _rows(ingest.read_csv, p)
    assert (n, problem, sum(len(v) for v in data.values())) == (2, None, lim)
    p = _csv(tmp_path, "a,b,c,d\nr1," + "x" * a + "," + "y" * a + "," + "z" * (b + 1) + "\n")
    assert _rows(ingest.read_csv, p) == [
        (2, None, (f"row of {lim + 1} characters, over the limit of {lim}", None, "over_limit"))
    ]
    p = _csv(tmp_path, "id,note\nr1," + "x" * (lim - 2) + "\n")  # the cell limit itself is limit + 1
    assert _rows(ingest.read_csv, p)[0][2] == (
        f"string of {lim - 2} characters, over the limit of {oio.MAX_STRING_CHARS}",
        "note",
        "over_limit",
    )


def test_csv_bad_bytes_and_bad_text_per_field(tmp_path):
    p = _csv(tmp_path, b"id,note,x\nr1,caf\x80,1\nr2,ok,a\x00b\nr3,ok,\xff\n")
    assert _rows(ingest.read_csv, p) == [
        (2, None, ("bytes that are not UTF-8", "note", "non_utf8")),
        (3, None, ("text contains a NUL character", "x", "bad_text")),
        (4, None, ("bytes that are not UTF-8", "x", "non_utf8")),
    ]


def test_jsonl_reader_passes_the_io_problem_through(tmp_path):
    p = _csv(tmp_path, b'{"id": "a"}\n\n[1]\n{"a": 1, "a": 2}\n{"n\xff": 1}\n', "x.jsonl")
    assert _rows(ingest.read_jsonl, p) == [
        (1, {"id": "a"}, None),
        (3, None, ("line is not a JSON object", None, "malformed_record")),
        (4, None, ("duplicate key in one object (which value is meant is ambiguous)", "a", "duplicate_key")),
        (5, None, ("bytes that are not UTF-8 at offset 3", None, "non_utf8")),
    ]


def _parquet(tmp_path, cols):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "x.parquet"
    pq.write_table(pa.table(cols), p)
    return p


def test_parquet_rows_binary_cells_and_bad_text(tmp_path):
    p = _parquet(
        tmp_path,
        {
            "id": ["p1", "p2", "p3", "p4"],
            "a": [b"ok", b"\xff", b"\x80", b"fine"],
            "b": [b"\xfe", b"ok", b"ok", b"x"],
            "note": ["n", "n", "bad\x00", "n"],
        },
    )
    assert _rows(ingest.read_parquet, p) == [
        (1, None, ("bytes that are not UTF-8", "b", "non_utf8")),
        (2, None, ("bytes that are not UTF-8", "a", "non_utf8")),  # the first bad column is named
        (3, None, ("bytes that are not UTF-8", "a", "non_utf8")),
        (4, {"id": "p4", "a": "fine", "b": "x", "note": "n"}, None),
    ]
    p = _parquet(tmp_path, {"id": ["p1", "p2", "p3"], "note": ["n", "bad\x00", "n"]})
    assert _rows(ingest.read_parquet, p) == [
        (1, {"id": "p1", "note": "n"}, None),
        (2, None, ("text contains a NUL character", "note", "bad_text")),
        (3, {"id": "p3", "note": "n"}, None),
    ]


def test_unreadable_parquet_names_the_file_and_the_error_type(tmp_path):
    p = _csv(tmp_path, b"not a parquet file", "x.parquet")
    e = _raises(list, ingest.read_parquet(p))
    assert (e.reason, e.file) == ("unreadable Parquet file (ArrowInvalid)", p)


def test_parquet_duplicate_column_names(tmp_path, monkeypatch):
    # pyarrow's reader itself refuses such a file (ArrowInvalid above); another reader may not
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays([pa.array(["1"]), pa.array(["2"])], names=["a", "a"])
    monkeypatch.setattr(pq, "read_table", lambda path: table)
    p = tmp_path / "d.parquet"
    e = _raises(list, ingest.read_parquet(p))
    assert (e.reason, e.file, e.kind) == ("duplicate column names", p, "duplicate_key")


def test_split_list_of_an_array_like_cell():
    np = pytest.importorskip("numpy")
    assert ingest._split_list(np.array(["K80.20", "K35.80"])) == ["K80.20", "K35.80"]
    assert ingest._split_list(" K80.20 ;K35.80| ,E11.9") == ["K80.20", "K35.80", "E11.9"]
    assert (
        ingest._split_list(None) == [] and ingest._split_list(5) == [5] and ingest._split_list(["a"]) == ["a"]
    )
