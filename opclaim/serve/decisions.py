"""A coder's decision: per-code items checked against the suggestion and the reference lists,
and the final claim they add up to."""

from __future__ import annotations

from opclaim.errors import CodeFormatError, InputError

ACTIONS = ("accept", "reject", "edit", "add")
SYSTEMS = ("icd10", "cpt")
PROVIDER_ROLES = ("surgeon", "assistant", "co-surgeon")  # what a coder's final_claim may name
_KEYS = {"claim": ("icd10", "providers"), "provider": ("name", "role", "lines"),
         "line": ("cpt", "modifiers", "description")}
MAX_TEXT = 200  # a provider name or a line description in a final_claim


class CodeRules:
    """What may be entered: billable ICD-10-CM (opclaim.codes), CPT/HCPCS of the right form (and in
    the site's list when one is given), modifiers from the modifier table."""

    def __init__(self, cpt_ref: dict | None = None, modifiers: dict | None = None):
        from opclaim.codes import modifier_table

        self.cpt_ref = cpt_ref
        self.modifiers = modifiers or modifier_table()

    def icd(self, code, where: str) -> str:
        from opclaim.codes import is_billable_icd10, normalize_icd10

        try:
            c = normalize_icd10(code)
        except CodeFormatError:
            raise InputError("malformed ICD-10-CM code", field=where) from None
        if not is_billable_icd10(c):
            raise InputError("not a billable ICD-10-CM code", field=where)
        return c

    def cpt(self, code, where: str) -> str:
        from opclaim.codes import normalize_cpt

        try:
            c = normalize_cpt(code)
        except CodeFormatError:
            raise InputError("malformed CPT/HCPCS code", field=where) from None
        if self.cpt_ref is not None and c not in self.cpt_ref:
            raise InputError("CPT/HCPCS code not in the site's code list", field=where)
        return c

    def mods(self, mods, where: str) -> list[str]:
        if mods is None:
            return []
        if not isinstance(mods, list):
            raise InputError("must be a list", field=where)
        out = []
        for i, m in enumerate(mods):
            s = str(m).strip().upper()
            if s not in self.modifiers:
                raise InputError("unknown modifier", field=f"{where}[{i}]")
            out.append(s)
        return out

    def claim(self, claim: dict, where: str = "final_claim") -> dict:
        from opclaim.claim import Claim

        _known_keys(claim, where)
        c = Claim.from_dict(claim, where=where)  # shape and formats (field paths in errors)
        for i, code in enumerate(c.icd10):
            self.icd(code, f"{where}.icd10[{i}]")
        for pi, p in enumerate(c.providers):
            for li, ln in enumerate(p.lines):
                self.cpt(ln.cpt, f"{where}.providers[{pi}].lines[{li}].cpt")
                self.mods(ln.modifiers, f"{where}.providers[{pi}].lines[{li}].modifiers")
        return c.to_dict()

    def matching_claim(self, claim, items_claim: dict, where: str = "final_claim") -> dict:
        """A coder's final_claim, validated (schema, known keys, provider roles, code lists) and
        required to bill exactly what the decision items add up to: the same ICD-10-CM codes and
        the same CPT lines with their modifiers (names, roles and descriptions are the coder's)."""
        out = self.claim(claim, where)
        for pi, p in enumerate(out["providers"]):
            if p["role"] not in PROVIDER_ROLES:
                raise InputError(f"unknown role; allowed: {', '.join(PROVIDER_ROLES)}",
                                 field=f"{where}.providers[{pi}].role")
            if len(p["name"]) > MAX_TEXT:
                raise InputError(f"at most {MAX_TEXT} characters", field=f"{where}.providers[{pi}].name")
            for li, ln in enumerate(p["lines"]):
                if len(ln["description"]) > MAX_TEXT:
                    raise InputError(f"at most {MAX_TEXT} characters",
                                     field=f"{where}.providers[{pi}].lines[{li}].description")
        if set(out["icd10"]) != set(items_claim["icd10"]):
            raise InputError("ICD-10-CM codes differ from the decision items", field=f"{where}.icd10")
        if _lines(out) != _lines(items_claim):
            raise InputError("CPT lines or modifiers differ from the decision items", field=f"{where}.providers")
        return out


def _lines(claim: dict) -> list:
    return sorted((ln["cpt"], tuple(sorted(ln["modifiers"]))) for p in claim["providers"] for ln in p["lines"])


def _known_keys(claim, where: str) -> None:
    """Keys the claim schema does not know are refused (Claim.from_dict alone would drop them)."""
    def check(d, kind, w):
        if isinstance(d, dict):
            extra = [k for k in d if k not in _KEYS[kind]]
            if extra:
                raise InputError(f"unknown key(s); allowed: {', '.join(_KEYS[kind])}", field=w)
    check(claim, "claim", where)
    for pi, p in enumerate(claim.get("providers") or [] if isinstance(claim, dict) else []):
        check(p, "provider", f"{where}.providers[{pi}]")
        for li, ln in enumerate((p.get("lines") or []) if isinstance(p, dict) and isinstance(p.get("lines"), list)
                                else []):
            check(ln, "line", f"{where}.providers[{pi}].lines[{li}]")


def final_claim(items: list[dict], suggestion: dict | None, rules: CodeRules) -> tuple[list[dict], dict]:
    """Check the items against the suggestion; return (normalised items, final claim).

    Every suggested code needs exactly one accept/reject/edit item; add items bring new codes."""
    rows = (suggestion or {}).get("codes") or []
    # a CPT code can be billed by two providers (surgeon and assistant): rows are keyed with the provider
    suggested = {_key(r): r for r in rows}
    seen: set = set()
    icd: list[str] = []
    lines: dict[str, list[dict]] = {}
    first_provider = next((r.get("provider") for r in rows if r["system"] == "cpt" and r.get("provider")), None)
    clean = []
    if not isinstance(items, list):
        raise InputError("must be a list", field="items")
    for i, it in enumerate(items):
        w = f"items[{i}]"
        if not isinstance(it, dict):
            raise InputError("must be an object", field=w)
        system, action = it.get("system"), it.get("action")
        if system not in SYSTEMS:
            raise InputError(f"must be one of {', '.join(SYSTEMS)}", field=f"{w}.system")
        if action not in ACTIONS:
            raise InputError(f"must be one of {', '.join(ACTIONS)}", field=f"{w}.action")
        norm = rules.icd if system == "icd10" else rules.cpt
        if action == "add":
            code = norm(it.get("code"), f"{w}.code")
            to, base = code, None
        else:
            code = str(it.get("code") or "").strip().upper()
            cands = [k for k in suggested if k[0] == system and k[1] == code
                     and (system == "icd10" or it.get("provider") in (None, k[2]))]
            if not cands:
                raise InputError("code is not in the suggestion", field=f"{w}.code")
            k = next((k for k in cands if k not in seen), None)
            if k is None:
                raise InputError("code decided twice", field=f"{w}.code")
            seen.add(k)
            base = suggested[k]
            to = norm(it.get("to"), f"{w}.to") if action == "edit" else code
        item = {"system": system, "action": action, "code": code}
        if action == "edit":
            item["to"] = to
        if system == "cpt":
            mods = it.get("modifiers")
            mods = rules.mods(mods, f"{w}.modifiers") if mods is not None else list((base or {}).get("modifiers") or [])
            if action != "reject":
                item["modifiers"] = mods
                provider = str(it.get("provider") or (base or {}).get("provider") or first_provider or "Unknown")[:200]
                lines.setdefault(provider, []).append({"cpt": to, "modifiers": mods})
        elif action != "reject" and to not in icd:
            icd.append(to)
        clean.append(item)
    missing = [k for k in suggested if k not in seen]
    if missing:
        raise InputError(f"{len(missing)} suggested code(s) without an accept/reject/edit item", field="items")
    # roles are not in the model's text: the first provider is the surgeon (as opclaim.claim.parse_target)
    claim = {"icd10": icd, "providers": [{"name": n, "role": "surgeon" if i == 0 else "assistant", "lines": ls}
                                         for i, (n, ls) in enumerate(lines.items())]}
    return clean, claim


def _key(row: dict) -> tuple:
    return (row["system"], row["code"], row.get("provider") if row["system"] == "cpt" else None)


def agreement(suggested: dict | None, final: dict) -> dict:
    """Per code system: suggested and kept (accepted), suggested and dropped (rejected), new (added)."""
    from opclaim.claim import Claim

    s = Claim.from_dict(suggested or {"icd10": [], "providers": []})
    f = Claim.from_dict(final)
    out = {}
    for name, a, b in (("icd10", s.icd10_set(), f.icd10_set()), ("cpt", s.cpt_set(), f.cpt_set()),
                       ("modifiers", s.modifier_set(), f.modifier_set())):
        out[name] = {"accepted": len(a & b), "rejected": len(a - b), "added": len(b - a)}
    return out
