"""One synthetic encounter as facts (what happened), and the claim a coder derives from them.

The writers (dictation.py, terse.py) only put these facts into words; `code_claim` applies the
coding rules to the same facts, so every claim follows from its note. Distractors are facts too
(prior operations, EBL, lot numbers, extensions, ruled-out conditions), and the rules ignore them.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from opclaim.claim import Claim, Line, Provider
from opclaim.synth import catalog as cat
from opclaim.synth.names import FIRST, LAST, RULED_OUT

SERVICES = tuple(cat.SERVICE_WEIGHTS)
_WEIGHTS = [cat.SERVICE_WEIGHTS[s] for s in SERVICES]
_SPECIAL = set(cat.RETURN_PROCS) | set(cat.DISTINCT_PROCS)
_MAIN = {s: [p for p in ps if p.cpt not in _SPECIAL] for s, ps in cat.BY_SERVICE.items()}
_DATE0 = dt.date(2019, 1, 1).toordinal()
_DATE1 = dt.date(2023, 12, 31).toordinal()
_MALE_ONLY = {"52601", "55866", "55250", "54161", "55040", "54640", "54150"}
_BIG = {"open", "lap", "spine", "chest", "cranial"}
_SIDE_MOD = {"R": "RT", "L": "LT"}
_LID_MOD = {"LU": "E1", "LL": "E2", "RU": "E3", "RL": "E4"}
_FINGER_MOD = {"L": ["FA", "F1", "F2", "F3", "F4"], "R": ["F5", "F6", "F7", "F8", "F9"]}
_TOE_MOD = {"L": ["TA", "T1", "T2", "T3", "T4"], "R": ["T5", "T6", "T7", "T8", "T9"]}


@dataclass
class Person:
    first: str
    last: str
    cred: str = "MD"  # MD, DO, PA-C, NP

    @property
    def claim_name(self) -> str:
        if self.cred in ("MD", "DO"):
            return f"Dr. {self.first[0]}. {self.last}"
        return f"{self.first[0]}. {self.last}, {self.cred}"


@dataclass
class Done:
    """One procedure performed: where, for what, and why it is separate."""

    proc: cat.Proc
    side: str | None = None  # R, L, B
    digit: int | None = None  # 1 = thumb / great toe
    lid: str | None = None  # U / L
    pre: list = field(default_factory=list)  # Dx
    post: list = field(default_factory=list)  # Dx (differs from pre when found at surgery)
    distinct: str | None = None  # "59" separate incision, "XS" separate structure


@dataclass
class Scenario:
    id: str
    date: str
    service: str
    done: list[Done]
    surgeon: Person
    assistants: list[tuple[Person, str]]  # (person, kind): kind in MD, MD-NORES, PA, NP
    resident: Person | None
    anesthesiologist: Person
    anesthesia: str
    comorbid: list[cat.Comorbid]
    tobacco: int  # index into catalog.TOBACCO
    bmi: float
    obesity_documented: bool
    volume: str | None  # "22" increased / "52" reduced, on the first procedure
    global_period: tuple | None  # ("78"|"79", prior procedure name (dictation), terse, days ago)
    age: int
    sex: str  # F / M
    prior_surgeries: list[tuple[str, str, int]]  # (dictation name, terse name, year)
    ruled_out: tuple[str, str] | None
    ebl: int
    lot: str
    extension: str
    mrn: str
    detail: int  # how many extra narrative paragraphs (long tail)
    short: bool = False  # trimmed narrative for CPU demos (all sections kept)


def _pick_dx(rng: random.Random, proc: cat.Proc, side: str | None, digit, lid) -> list:
    return [rng.choice(proc.dx)]


def _place(rng: random.Random, proc: cat.Proc, dx: cat.Dx, side_hint: str | None = None):
    """Side / digit / eyelid for a procedure, consistent with the diagnosis' code table."""
    if proc.lat is None:
        return None, None, None
    side = side_hint or rng.choice("RL")
    if proc.lat == "eyelid":
        keys = [k for k in dx.code if k != "B"] if isinstance(dx.code, dict) else ["RU", "LU"]
        if side_hint in ("R", "L") and any(k[0] == side_hint for k in keys):
            keys = [k for k in keys if k[0] == side_hint]
        key = rng.choice(keys)
        if side_hint == "B":
            return "B", None, key[1]
        return key[0], None, key[1]
    if proc.lat in ("finger", "toe"):
        if side == "B":
            side = rng.choice("RL")
        weights = [5, 2, 3, 3, 2] if proc.lat == "finger" else ([6, 1, 1, 1, 1] if proc.cpt == "11750" else [1, 4, 3, 2, 1])
        return side, rng.choices(range(1, 6), weights)[0], None
    return side, None, None


def _dx_codes(dx: cat.Dx, d: Done) -> list[str]:
    return dx.for_side(d.side, d.digit, d.lid)


def _person(rng: random.Random, cred: str = "MD") -> Person:
    return Person(rng.choice(FIRST), rng.choice(LAST), cred)


def draw(rng: random.Random, case_id: str, length: str = "real", services=None) -> Scenario:
    """One case's facts. `services` restricts the service mix (weights kept among those named)."""
    if services:
        service = rng.choices(list(services), [cat.SERVICE_WEIGHTS[x] for x in services])[0]
    else:
        service = rng.choices(SERVICES, _WEIGHTS)[0]
    procs = _MAIN[service]
    roll = rng.random()
    global_period = None
    if roll < 0.03:
        # Unplanned return to the OR for a complication of an earlier operation -> 78.
        index = rng.choice(procs)
        proc = cat.BY_CPT[rng.choice(cat.RETURN_PROCS)]
        global_period = ("78", index.name, index.terse, rng.randint(2, 25))
    else:
        proc = rng.choice(procs)
        if roll < 0.07:
            # An unrelated operation inside another operation's global period -> 79.
            other = rng.choice([p for p in procs if p.cpt != proc.cpt] or procs)
            global_period = ("79", other.name, other.terse, rng.randint(5, 60))

    dx = rng.choice(proc.dx)
    side_hint = "B" if (proc.bilat and rng.random() < 0.2) else None
    if global_period and global_period[0] == "79" and proc.lat == "side" and proc.service == "Ophthalmology":
        side_hint = rng.choice("RL")  # the classic case: second eye inside the first eye's global period
    side, digit, lid = _place(rng, proc, dx, side_hint)
    first = Done(proc, side, digit, lid, [dx], [dx])
    if isinstance(dx.code, str) and dx.code in proc.up and rng.random() < 0.35:
        first.post = [proc.up[dx.code]]
    elif isinstance(dx.code, dict) and rng.random() < 0.35:
        up = proc.up.get(dx.code.get("R"))  # upgrades are keyed by the right-side code
        if up is not None:
            first.post = [up]
    if len(proc.dx) > 1 and rng.random() < 0.12 and not global_period:
        extra = rng.choice([x for x in proc.dx if x is not dx])
        try:
            extra.for_side(side, digit, lid)
            first.pre.append(extra)
            first.post.append(extra)
        except KeyError:
            pass
    done = [first]

    for cpt in proc.comp:
        comp = cat.BY_CPT[cpt]
        if rng.random() >= 0.3 or global_period:
            continue
        if side == "B" and comp.lat and not comp.bilat:
            continue
        cdx = rng.choice(comp.dx)
        hint = side if side in ("R", "L", "B") else None
        if hint == "B" and comp.lat in ("finger", "toe"):
            continue
        cside, cdigit, clid = _place(rng, comp, cdx, hint if comp.lat else None)
        done.append(Done(comp, cside, cdigit, clid, [cdx], [cdx]))

    if rng.random() < 0.04 and not global_period:
        # Separate lesion work: 59 (separate incision) or XS (separate structure).
        which = rng.choice(cat.DISTINCT_PROCS)
        dp = cat.BY_CPT[which]
        ddx = rng.choice(dp.dx)
        done.append(Done(dp, None, None, None, [ddx], [ddx], distinct="59" if which == "11403" else "XS"))

    volume = None
    v = rng.random()
    if v < 0.04:
        volume = "22"
    elif v < 0.07 and proc.cpt not in cat.RETURN_PROCS:
        volume = "52"

    surgeon = _person(rng, rng.choice(["MD", "MD", "MD", "DO"]))
    assistants: list[tuple[Person, str]] = []
    p_assist = 0.55 if proc.approach in _BIG else 0.15
    resident = _person(rng) if rng.random() < 0.2 else None
    if rng.random() < p_assist:
        kind = rng.choices(["MD", "MD-NORES", "PA", "NP"], [45, 15, 30, 10])[0]
        if kind == "MD-NORES" and resident is not None:
            kind = "MD"
        cred = {"MD": "MD", "MD-NORES": "MD", "PA": "PA-C", "NP": "NP"}[kind]
        assistants.append((_person(rng, cred), kind))
        if kind.startswith("MD") and rng.random() < 0.15:
            assistants.append((_person(rng, "PA-C"), "PA"))

    comorbid: list[cat.Comorbid] = []
    cats_used = {c[:3] for d in done for x in d.post for c in _dx_codes(x, d)}
    for c in rng.sample(cat.COMORBIDITIES, rng.choice([0, 0, 1, 1, 1, 2, 2, 3, 4])):
        if any(code[:3] in cats_used for code in c.codes):
            continue
        comorbid.append(c)
        cats_used.update(code[:3] for code in c.codes)
    tobacco = rng.choices([0, 1, 2], [15, 20, 65])[0]
    if "F17" in cats_used or "Z87" in cats_used:
        tobacco = 2
    bariatric = proc.cpt in ("43775", "43644")
    bmi = round(rng.uniform(40.5, 58.0) if bariatric else rng.triangular(19.0, 48.0, 27.0), 1)
    obesity_documented = bariatric or (bmi >= 30 and rng.random() < 0.75)
    if "E66" in cats_used and not bariatric:
        obesity_documented = False

    peds = service == "Pediatric Surgery" or proc.cpt in ("42820", "42830")
    age = rng.randint(1, 11) if peds else rng.randint(19, 88)
    if service == "Obstetrics":
        sex = "F"
        age = rng.randint(19, 42)
    elif service == "Gynecology":
        sex = "F"
    elif proc.cpt in _MALE_ONLY:
        sex = "M"
    else:
        sex = rng.choice("FM")
    if peds:
        comorbid, tobacco, obesity_documented = [], 2, False
        bmi = round(rng.uniform(14.0, 19.0), 1)

    others = [p for p in cat.PROCEDURES if p.service != service and p.cpt not in _SPECIAL]
    year = int(dt.date.fromordinal(_DATE0).year)
    prior = [(p.name, p.terse, rng.randint(1975, year - 1)) for p in rng.sample(others, rng.choice([0, 1, 1, 2, 3]))]
    ruled_out = rng.choice(RULED_OUT) if rng.random() < 0.4 else None

    if length == "short":
        detail = 0
    else:
        # Log-normal: most reports are routine, a few run to pages (the long tail past 1,500 tokens).
        detail = min(22, int(rng.lognormvariate(0.6, 1.0)))
    anesthesia = {"needle": "local", "laser": "topical", "eye": "mac", "endo": "mac", "bronch": "mac"}.get(proc.approach, "general")
    if proc.approach in ("eye",) and rng.random() < 0.2:
        anesthesia = "block"
    if proc.approach == "skin" and rng.random() < 0.7:
        anesthesia = "local"
    date = dt.date.fromordinal(rng.randint(_DATE0, _DATE1)).isoformat()
    return Scenario(
        id=case_id, date=date, service=service, done=done, surgeon=surgeon, assistants=assistants,
        resident=resident, anesthesiologist=_person(rng), anesthesia=anesthesia, comorbid=comorbid,
        tobacco=tobacco, bmi=bmi, obesity_documented=obesity_documented, volume=volume,
        global_period=global_period, age=age, sex=sex, prior_surgeries=prior, ruled_out=ruled_out,
        ebl=rng.choice([0, 5, 10, 15, 20, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500] if proc.approach in _BIG
                       else [0, 0, 1, 2, 5, 10, 15, 20]),
        lot=f"{rng.randint(10000, 99999)}", extension=f"{rng.randint(2000, 79999)}",
        mrn=f"{rng.randint(0, 99999999):08d}", detail=detail, short=length == "short")


# ---------------------------------------------------------------- the coder's rules
def _place_mods(d: Done) -> list[str]:
    p = d.proc
    if p.lat is None or d.side is None:
        return []
    if d.side == "B":
        return ["50"]
    if p.lat == "eyelid":
        return [_LID_MOD[d.side + d.lid]]
    if p.lat == "finger":
        return [_FINGER_MOD[d.side][d.digit - 1]]
    if p.lat == "toe":
        return [_TOE_MOD[d.side][d.digit - 1]]
    return [_SIDE_MOD[d.side]]


def icd10_codes(s: Scenario) -> list[str]:
    """Post-operative diagnoses first (they win over pre-operative ones), then what the history
    documents: comorbidities, tobacco, obesity with its BMI Z-code."""
    out: list[str] = []
    for d in s.done:
        for dx in d.post:
            out += _dx_codes(dx, d)
    for c in s.comorbid:
        out += c.codes
    out += cat.TOBACCO[s.tobacco][0]
    if s.obesity_documented:
        out += [c for c in cat.obesity_codes(s.bmi) if c not in out] or []
    seen, result = set(), []
    for c in out:
        if c not in seen:
            seen.add(c)
            result.append(c)
    return result


def surgeon_lines(s: Scenario) -> list[Line]:
    lines = []
    for i, d in enumerate(s.done):
        mods = []
        if i == 0 and s.volume:
            mods.append(s.volume)
        mods += _place_mods(d)
        if i > 0:
            mods.append("51")
        if d.distinct:
            mods.append(d.distinct)
        if s.global_period:
            mods.append(s.global_period[0])
        lines.append(Line(d.proc.cpt, mods, d.proc.desc))
    return lines


_ASSIST_MOD = {"MD": "80", "MD-NORES": "82", "PA": "AS", "NP": "AS"}


def code_claim(s: Scenario) -> Claim:
    lines = surgeon_lines(s)
    surgeon = Provider(s.surgeon.claim_name, "surgeon",
                       [Line(x.cpt, x.modifiers + (["GC"] if s.resident else []), x.description) for x in lines])
    providers = [surgeon]
    for person, kind in s.assistants:
        providers.append(Provider(person.claim_name, "assistant",
                                  [Line(x.cpt, x.modifiers + [_ASSIST_MOD[kind]], x.description) for x in lines]))
    return Claim(icd10_codes(s), providers)


# ---------------------------------------------------------------- gold evidence
def gold_evidence(note: str, facts: list, claim: Claim) -> dict:
    """The writer's own phrases for each coded fact (writers' `facts`: (system, codes, phrase)),
    found in the finished note (case-insensitively: a terse note may be lower-cased at the end)
    and snapped to the sentences or lines that carry them: {"icd10"|"cpt": {code: [[start, end], ...]}}
    for the claim's codes, character offsets into `note`."""
    from opclaim.sentences import sentences

    low = note.lower()
    hay = low if len(low) == len(note) else note  # lower() may change length outside ASCII
    spans = sentences(note)
    wanted = {"icd10": claim.icd10_set(), "cpt": claim.cpt_set()}
    out: dict[str, dict[str, list]] = {"icd10": {}, "cpt": {}}
    for system, codes, phrase in facts:
        if not phrase:
            continue
        needle = phrase.lower() if hay is low else phrase
        hits = []
        at = hay.find(needle)
        while at >= 0:
            hits += [[s, e] for s, e in spans if s < at + len(needle) and e > at]
            at = hay.find(needle, at + 1)
        for code in codes:
            if code in wanted[system]:
                got = out[system].setdefault(code, [])
                got += [h for h in hits if h not in got]
    return {system: {c: sorted(v) for c, v in d.items() if v} for system, d in out.items()}
