"""A seeded generator of malformed case records (JSONL lines), one kind per way a record can be
wrong, each carrying a canary where a value would otherwise show. Used by test_fuzz_readers and
test_redaction. Every record it makes must be rejected (none is valid)."""

from __future__ import annotations

import copy
import json
import random

CANARY = "CANARY Pt John Smith DOB 1/2/1950 with HIV"
SHORT_CANARY = "CANARY Jo"

GOOD = {"id": "ok-1", "date": "2021-03-14", "service": "General Surgery",
        "note": "PREOPERATIVE DIAGNOSIS: Symptomatic cholelithiasis. PROCEDURE: Laparoscopic cholecystectomy.",
        "claim": {"icd10": ["K80.20"], "providers": [{"name": "Dr. A. Rivera", "role": "surgeon", "lines": [
            {"cpt": "47562", "modifiers": [], "description": "Laparoscopic cholecystectomy"}]}]}}


def _canary(rng: random.Random) -> str:
    """Canary text in one of several quotings (apostrophes switch repr to double quotes)."""
    return rng.choice([CANARY, SHORT_CANARY, f"O'Brien {CANARY}", f'say "{CANARY}"', CANARY.lower(),
                       f"{CANARY}\\n", CANARY * 3])


def good_with(rid, path: str, value) -> dict:
    """A copy of the good record with id `rid` and `value` at a dotted path (list indexes as numbers)."""
    d = copy.deepcopy(GOOD)
    d["id"] = rid
    node = d
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return d


def _set(path: str, value):
    """A kind that puts `value` at a dotted path (list indexes as numbers) of the good record."""
    def make(rng, rid):
        d = good_with(rid, path, value(rng) if callable(value) else value)
        return json.dumps(d, ensure_ascii=rng.random() < 0.5).encode()
    return make


def _drop(key: str):
    def make(rng, rid):
        d = copy.deepcopy(GOOD)
        d["id"] = rid
        d.pop(key)
        return json.dumps(d).encode()
    return make


def _raw(fn):
    """A kind written as text/bytes directly: fn(rng, rid) -> str | bytes."""
    def make(rng, rid):
        out = fn(rng, rid)
        return out.encode("utf-8", errors="surrogatepass") if isinstance(out, str) else out
    return make


def _good_text(rid: str, **over) -> str:
    d = copy.deepcopy(GOOD)
    d["id"] = rid
    d.update(over)
    return json.dumps(d)


def _truncate(frac: float):
    def fn(rng, rid):
        t = _good_text(rid, note=_canary(rng))
        return t[: max(1, int(len(t) * frac) + rng.randint(-3, 3))]
    return fn


def _nest(depth: int, opener="[", closer="]"):
    def fn(rng, rid):
        inner = opener * depth + closer * depth if opener == "[" else "".join(['{"a":'] * depth) + "1" + "}" * depth
        return f'{{"id": "{rid}", "note": "n", "claim": {{"icd10": ["K80.20"]}}, "x": {inner}}}'
    return fn


KINDS = {
    # ---- not JSON, or not a JSON object
    "truncated_quarter": _raw(_truncate(0.25)),
    "truncated_half": _raw(_truncate(0.5)),
    "truncated_end": _raw(_truncate(0.97)),
    "missing_closing_brace": _raw(lambda r, i: _good_text(i, note=_canary(r))[:-1]),
    "trailing_garbage": _raw(lambda r, i: _good_text(i, note=_canary(r)) + " xyz"),
    "trailing_comma": _raw(lambda r, i: _good_text(i, note=_canary(r))[:-1] + ",}"),
    "single_quotes": _raw(lambda r, i: _good_text(i, note=_canary(r)).replace('"', "'")),
    "unquoted_keys": _raw(lambda r, i: _good_text(i, note=_canary(r)).replace('"id"', "id")),
    "comment": _raw(lambda r, i: "// " + _canary(r) + "\n"[:0] + _good_text(i)),
    "top_level_list": _raw(lambda r, i: json.dumps([_canary(r), 1])),
    "top_level_string": _raw(lambda r, i: json.dumps(_canary(r))),
    "top_level_number": _raw(lambda r, i: str(r.randint(0, 10**9))),
    "top_level_null": _raw(lambda r, i: "null"),
    "top_level_true": _raw(lambda r, i: "true"),
    "nan_constant": _raw(lambda r, i: _good_text(i).replace('"date": "2021-03-14"', '"date": NaN')),
    "infinity_constant": _raw(lambda r, i: _good_text(i).replace('"date": "2021-03-14"', '"date": -Infinity')),
    "raw_control_char": _raw(lambda r, i: _good_text(i, note="a\x01" + _canary(r)).replace("\\u0001", "\x01")),
    "raw_nul_byte": _raw(lambda r, i: _good_text(i, note="\u2603" + _canary(r)).replace("\\u2603", "\x00")
                         .replace("\u2603", "\x00")),
    # ---- limits
    "deep_list_65": _raw(_nest(65)),
    "deep_list_1000": _raw(_nest(1000)),
    "deep_list_10000": _raw(_nest(10000)),
    "deep_object_200": _raw(_nest(200, "{", "}")),
    "int_31_digits": _raw(lambda r, i: _good_text(i).replace(f'"id": "{i}"', '"id": ' + "7" * 31)),
    "int_4301_digits": _raw(lambda r, i: _good_text(i).replace(f'"id": "{i}"', '"id": ' + "9" * 4301)),
    "int_5000_digits_age": _raw(lambda r, i: _good_text(i)[:-1] + ', "patient": {"age": ' + "1" * 5000 + "}}"),
    "float_long": _raw(lambda r, i: _good_text(i)[:-1] + ', "patient": {"age": 1.' + "5" * 300 + "}}"),
    "float_overflow": _raw(lambda r, i: _good_text(i)[:-1] + ', "patient": {"age": 1e400}}'),
    "huge_note": _set("note", lambda r: "word " * 210_000),
    "huge_record": _raw(lambda r, i: _good_text(i, service="s" * 10, note="n " * 1_100_000)),
    # ---- text that cannot be written back
    "lone_surrogate_note": _raw(lambda r, i: _good_text(i, note="a").replace('"a"', '"\\ud800 ' + CANARY + '"')),
    "lone_low_surrogate": _raw(lambda r, i: _good_text(i, note="a").replace('"a"', '"x\\udfff"')),
    "lone_surrogate_icd": _raw(lambda r, i: _good_text(i).replace("K80.20", "K80.2\\ud800")),
    "lone_surrogate_key": _raw(lambda r, i: _good_text(i)[:-1] + ', "\\ud800": 1}'),
    "escaped_nul_note": _raw(lambda r, i: _good_text(i, note="a").replace('"a"', '"a\\u0000' + CANARY + '"')),
    "non_utf8_byte": _raw(lambda r, i: _good_text(i, note="Q" + _canary(r)).encode().replace(b"Q", b"\xff")),
    "non_utf8_truncated_seq": _raw(lambda r, i: _good_text(i, note="Q").encode().replace(b"Q", b"\xc3")),
    "non_utf8_overlong": _raw(lambda r, i: _good_text(i, note="Q").encode().replace(b"Q", b"\xc0\xaf")),
    "latin1_text": _raw(lambda r, i: json.dumps({**GOOD, "id": i, "note": "caf\u00e9 " + CANARY},
                                                ensure_ascii=False).encode("latin-1")),
    "bom_mid_file": _raw(lambda r, i: "\ufeff" + _good_text(i)),
    # ---- duplicate keys
    "duplicate_id_key": _raw(lambda r, i: _good_text(i)[:-1] + f', "id": "{i}-b"}}'),
    "duplicate_note_key": _raw(lambda r, i: _good_text(i)[:-1] + f', "note": {json.dumps(_canary(r))}}}'),
    "duplicate_nested_key": _raw(lambda r, i: _good_text(i).replace('"role": "surgeon"',
                                                                   '"role": "surgeon", "role": "assistant"')),
    # ---- wrong types
    "note_int": _set("note", 12345),
    "note_true": _set("note", True),
    "note_float": _set("note", 1.5),
    "note_list": _set("note", lambda r: [_canary(r)]),
    "note_object": _set("note", lambda r: {"text": _canary(r)}),
    "note_empty": _set("note", "   "),
    "note_missing": _drop("note"),
    "id_bool": _set("id", False),
    "id_float": _set("id", 1.5),
    "id_list": _set("id", lambda r: [_canary(r)]),
    "id_object": _set("id", lambda r: {"v": _canary(r)}),
    "id_missing": _drop("id"),
    "claim_string": _set("claim", lambda r: _canary(r)),
    "claim_list": _set("claim", lambda r: [_canary(r)]),
    "claim_int": _set("claim", 7),
    "claim_empty": _set("claim", {}),
    "claim_missing": _drop("claim"),
    "icd10_string": _set("claim.icd10", lambda r: _canary(r)),
    "icd10_object": _set("claim.icd10", lambda r: {"a": _canary(r)}),
    "icd_item_int": _set("claim.icd10.0", 8020),
    "icd_item_null": _set("claim.icd10.0", None),
    "icd_item_list": _set("claim.icd10.0", lambda r: [_canary(r)]),
    "icd_item_text": _set("claim.icd10.0", lambda r: _canary(r)),
    "icd_item_long": _set("claim.icd10.0", lambda r: "K80.20 " + "x" * r.randint(40, 500)),
    "icd_unknown_code": _set("claim.icd10.0", lambda r: r.choice(["Z99.99", "K80.29", "A00.9Z", "U99.9"])),
    "icd_letter_o": _set("claim.icd10.0", lambda r: r.choice(["K8O.2O", "K80.2O", "E1O.9", "S72.OO1A"])),
    "icd_malformed": _set("claim.icd10.0", lambda r: r.choice(["80K.2", "KK0.20", "K80-20", "K", "K80.200000"])),
    "providers_object": _set("claim.providers", lambda r: {"name": _canary(r)}),
    "providers_string": _set("claim.providers", lambda r: _canary(r)),
    "provider_item_string": _set("claim.providers.0", lambda r: _canary(r)),
    "provider_name_list": _set("claim.providers.0.name", lambda r: [_canary(r)]),
    "provider_name_object": _set("claim.providers.0.name", lambda r: {"n": _canary(r)}),
    "provider_name_int": _set("claim.providers.0.name", 42),
    "provider_role_list": _set("claim.providers.0.role", lambda r: [_canary(r)]),
    "lines_object": _set("claim.providers.0.lines", lambda r: {"cpt": "47562"}),
    "line_item_string": _set("claim.providers.0.lines.0", lambda r: _canary(r)),
    "cpt_text": _set("claim.providers.0.lines.0.cpt", lambda r: _canary(r)),
    "cpt_bool": _set("claim.providers.0.lines.0.cpt", True),
    "cpt_list": _set("claim.providers.0.lines.0.cpt", lambda r: ["47562"]),
    "cpt_null": _set("claim.providers.0.lines.0.cpt", None),
    "cpt_malformed": _set("claim.providers.0.lines.0.cpt", lambda r: r.choice(["4756", "475620", "ABCDE", "0042X"])),
    "cpt_other_script_digits": _set("claim.providers.0.lines.0.cpt", "\u0664\u0667\u0665\u0666\u0662"),
    "icd_fullwidth_letter": _set("claim.icd10.0", "\uff2b80.20"),
    "modifiers_object": _set("claim.providers.0.lines.0.modifiers", lambda r: {"80": _canary(r)}),
    "modifiers_int": _set("claim.providers.0.lines.0.modifiers", 80),
    "modifier_item_list": _set("claim.providers.0.lines.0.modifiers", lambda r: [["80"]]),
    "modifier_item_text": _set("claim.providers.0.lines.0.modifiers", lambda r: [_canary(r)]),
    "modifier_unknown": _set("claim.providers.0.lines.0.modifiers", lambda r: [r.choice(["ZZ", "Q9", "0Z"])]),
    "description_list": _set("claim.providers.0.lines.0.description", lambda r: [_canary(r)]),
    "description_object": _set("claim.providers.0.lines.0.description", lambda r: {"d": _canary(r)}),
    "service_list": _set("service", lambda r: [_canary(r)]),
    "service_object": _set("service", lambda r: {"s": _canary(r)}),
    "service_int": _set("service", 3),
    "date_int": _set("date", 20210314),
    "date_text": _set("date", lambda r: _canary(r)),
    "date_impossible": _set("date", "2021-13-45"),
    "date_list": _set("date", lambda r: ["2021-03-14"]),
    "style_int": _set("style", 1),
    "rationale_list": _set("rationale", lambda r: [_canary(r)]),
    "source_object": _set("source", lambda r: {"s": _canary(r)}),
    "extra_list": _set("extra", lambda r: [_canary(r)]),
    "patient_list": _set("patient", lambda r: [_canary(r)]),
    "patient_string": _set("patient", lambda r: _canary(r)),
    "patient_age_negative": _set("patient", {"age": -1}),
    "patient_age_200": _set("patient", {"age": 200}),
    "patient_age_text": _set("patient", lambda r: {"age": _canary(r)}),
    "patient_age_bool": _set("patient", {"age": True}),
    "patient_sex_unknown_word": _set("patient", lambda r: {"sex": _canary(r)}),
    "patient_sex_int": _set("patient", {"sex": 1}),
    "patient_unknown_key": _set("patient", lambda r: {"age": 40, "name": _canary(r)}),
    # ---- null where a list belongs, a number where a string belongs (issue 28: were coerced)
    "icd10_null": _set("claim.icd10", None),
    "providers_null": _set("claim.providers", None),
    "lines_null": _set("claim.providers.0.lines", None),
    "modifiers_null": _set("claim.providers.0.lines.0.modifiers", None),
    "modifier_item_int": _set("claim.providers.0.lines.0.modifiers", lambda r: [r.choice([59, 80, 51])]),
    # ---- no billable line: `opclaim data validate` rejects (no_cpt_line)
    "providers_empty": _set("claim.providers", []),
    "lines_empty": _set("claim.providers.0.lines", []),
}

# The strict readers (read_cases: train, infer, eval, split, stats) do not apply the modifier table
# the non-empty-claim rule or the billable-line rule; `opclaim data validate` does. Every other kind
# is rejected by both.
STRICT_ACCEPTS = {"modifier_unknown", "claim_empty", "providers_empty", "lines_empty"}

# Kinds too large to repeat many times (megabytes per record).
_RARE = {"huge_note", "huge_record", "deep_list_10000", "int_5000_digits_age", "int_4301_digits"}


def generate(seed: int = 0, per_kind: int = 12) -> list[tuple[str, bytes]]:
    """[(kind, line bytes without newline)], every kind `per_kind` times (large kinds twice)."""
    rng = random.Random(seed)
    out = []
    for rep in range(per_kind):
        for kind, make in KINDS.items():
            if kind in _RARE and rep >= 2:
                continue
            line = make(rng, f"r{rep}-{kind}")
            assert b"\n" not in line, kind
            out.append((kind, line))
    rng.shuffle(out)
    return out


def good_line(rid: str = "ok-1") -> bytes:
    return _good_text(rid).encode()


def leaks(text) -> bool:
    """Does `text` carry any part of a canary (in any case)? Paths of tests never do."""
    t = str(text).lower()
    return any(s in t for s in ("canary pt", "canary jo", "john smith", "1/2/1950"))
