"""The `terse` writer: a brief note typed by a busy surgeon: lower case, abbreviations
("lap chole", "s/p", "w/", "R"/"L"), fragments and bullet lists. It shares no templates with the
dictation writer; only the facts are the same."""

from __future__ import annotations

import datetime as dt
import random

from opclaim.synth import catalog as cat
from opclaim.synth.names import MEDS
from opclaim.synth.places import terse_dx, terse_place, terse_proc
from opclaim.synth.scenario import Scenario

# Other shorthand for the same operation.
SYNONYMS = {"66984": ["CE/IOL", "phaco/IOL"], "47562": ["LC", "lap CCY"], "29881": ["knee scope, PMM", "KA w/ PMM"],
            "27447": ["TKR"], "27130": ["THR"], "44970": ["lap appendectomy"], "42826": ["tonsillectomy"],
            "52000": ["cysto (dx)"], "64721": ["CTR"], "67028": ["anti-VEGF IVI", "intravitreal inj"],
            "29827": ["ASC RCR"], "49650": ["lap IHR (TEP) w/ mesh"], "45385": ["colo, snare polypectomy"]}
_ANES = {"general": "GETA", "mac": "MAC/topical", "block": "retrobulbar + MAC", "local": "local (1% lido w/ epi)", "topical": "topical"}
_BULLETS = {
    "eye": ["betadine prep, sterile drape, speculum", "paracenteses, visco to AC"],
    "laser": ["topical gtts, contact lens", "laser applied at slit lamp"],
    "eyelid": ["marked, lido w/ epi", "incision along markings"],
    "scope": ["tourniquet, prep/drape", "std portals, dx scope"],
    "open": ["supine, padded, prep/drape", "incision, bovie thru subq"],
    "closed": ["supine, EUA", "controlled manipulation"],
    "lap": ["prep/drape, foley", "hasson @ umbilicus, ports under vision"],
    "skin": ["prep/drape, margins marked", "lido, elliptical excision"],
    "cysto": ["lithotomy, prep/drape", "scope in per urethra, bladder surveyed"],
    "oral": ["shoulder roll, mouth gag suspended", "oropharynx exposed"],
    "ear": ["ear prepped", "canal cleaned under scope, TM seen"],
    "nasal": ["afrin pledgets, prep", "0 deg scope, lido injected"],
    "hsc": ["lithotomy, EUA", "cx dilated, HSC in w/ NS"],
    "vaginal": ["lithotomy, prep, bladder drained", "speculum, tenaculum on cx"],
    "spine": ["prone on jackson, level confirmed w/ fluoro", "midline incision, subperiosteal exposure"],
    "cranial": ["pins, navigation registered", "flap + crani, dura opened"],
    "needle": ["prone, chg prep", "needle to target under fluoro, contrast ok, no vascular uptake"],
    "chest": ["positioned, SLV confirmed", "chest entered, pleural space inspected"],
    "endo": ["L lat decubitus, sedation", "scope advanced under direct vis"],
    "bronch": ["supine, topical lido to airway", "bronch in, airway survey"],
    "anal": ["prone jackknife, prep", "anoscope, columns examined"],
}
_CLOSE = {"eye": "wounds hydrated, watertight", "laser": "IOP checked post tx, ok", "eyelid": "6-0 prolene running, ung",
          "scope": "portals closed w/ nylon", "open": "irrigated, layered closure, staples", "closed": "soft dressing, NV intact",
          "lap": "umbilical fascia closed, 4-0 subq", "skin": "layered closure", "cysto": "bladder drained",
          "oral": "hemostasis w/ suction bovie", "ear": "gelfoam in canal", "nasal": "dissolvable packing",
          "hsc": "fluid deficit ok", "vaginal": "hemostasis ok", "spine": "irrigated, fascia closed", "cranial": "dura closed, flap plated",
          "needle": "needle out, bandaid", "chest": "CT left, closed in layers", "endo": "scope out, air suctioned",
          "bronch": "bronch out, no sig bleeding", "anal": "hemostasis ok, dressing"}
_EXTRA = ["ancef given prior to incision", "SCDs on + working", "pressure pts padded", "checklist done w/ whole team",
          "warm NS irrigation prn", "bipolar for small bleeders", "counts correct x2", "0.25% marcaine w/ epi to wound",
          "VSS thru case, no pressors", "family updated in waiting area", "d/c instructions reviewed",
          "extubated in OR, to PACU on O2", "VTE ppx: mechanical now, chemical POD1 if ok", "implant sticker in chart",
          "dressing on before drapes off", "periop glucose/BP goals to nursing", "intra-op photos to secure imaging",
          "preop labs reviewed, ok", "retractors repositioned periodically", "specimens labeled + read back",
          "no hematoma at end", "warmed fluids used"]

_HX_LONG = ["sx gradually worse over ~1 yr, worse end of day, partial relief w/ rest",
            "tried activity mod, NSAIDs, home exercise, observation -> no lasting relief",
            "outside imaging reviewed personally + w/ radiology, correlates w/ exam",
            "risks discussed: bleeding, infection, nerve/vessel/organ injury, reop, anesthesia, VTE, persistent sx",
            "alternatives incl continued nonop care reviewed, pt wants to proceed",
            "seen in preop clinic, airway ok, npo + med instructions given",
            "lives w/ family, independent ADLs, ride + help at home arranged",
            "exam in clinic c/w dx, VSS, otherwise unremarkable",
            "counseled re recovery: return to work, no driving on narcotics, f/u schedule, handout given",
            "consent signed, all ?s answered",
            "anticoag/antiplatelet plan reviewed w/ PCP",
            "pt prefers spanish, interpreter used for consent"]


def _date(rng: random.Random, iso: str) -> str:
    d = dt.date.fromisoformat(iso)
    return rng.choice([f"{d.month}/{d.day}/{d.strftime('%y')}", d.strftime("%m/%d/%y"), f"{d.month}/{d.day}"])


def _hx(rng: random.Random, s: Scenario) -> list[str]:
    out = []
    sex = s.sex.lower() if rng.random() < 0.5 else s.sex
    first = s.done[0]
    out.append(f"{s.age}{sex} w/ {terse_dx(first, first.pre[0])}, failed conservative tx" if s.age >= 12
               else f"{s.age}yo {sex} w/ {terse_dx(first, first.pre[0])}")
    if s.global_period:
        mod, _, prior, days = s.global_period
        if mod == "78":
            out.append(f"s/p {prior} by me {days}d ago (in global) -> unplanned return to OR for complication")
        else:
            out.append(f"s/p {prior} by me {days}d ago, still in global; today unrelated")
    pmh = [c.terse for c in s.comorbid]
    if s.obesity_documented:
        pmh.append(("morbid obesity" if s.bmi >= 40 else "obesity") + f", BMI {s.bmi}")
    if s.age >= 12:
        out.append("pmh: " + (", ".join(pmh) if pmh else "none sig"))
    if s.prior_surgeries:
        out.append("psh: " + ", ".join(f"{t} ('{str(y)[2:]})" for _, t, y in s.prior_surgeries))
    if s.age >= 12:
        out.append(cat.TOBACCO[s.tobacco][2] + ("" if s.obesity_documented else f", BMI {s.bmi}"))
    if s.ruled_out:
        _, x, test = s.ruled_out
        out.append(f"r/o {x} -> neg {test.split()[0].lower() if len(test.split()) > 2 else test.lower()}")
    return out


def write(rng: random.Random, s: Scenario, facts: list | None = None) -> str:
    """The note. `facts`, when given, receives (system, codes, phrase) for every phrase this writer
    puts in the note to state a coded fact (scenario.gold_evidence turns them into spans)."""
    first = s.done[0]
    pre = [terse_dx(d, dx) for d in s.done for dx in d.pre]
    post = [terse_dx(d, dx) for d in s.done for dx in d.post]
    L = [rng.choice(["op note", "brief op note", "op note (brief)"]) + f" {_date(rng, s.date)}", f"mrn {s.mrn}"]
    L.append("pre-op dx: " + "; ".join(pre))
    L.append("post-op dx: " + ("same" if post == pre else "; ".join(post)))
    names = [terse_proc(d, rng.choice([d.proc.terse] + SYNONYMS.get(d.proc.cpt, []))) for d in s.done]
    if facts is not None:
        for d, name in zip(s.done, names, strict=True):
            facts += [("cpt", (d.proc.cpt,), name), ("cpt", (d.proc.cpt,), d.proc.terse)]  # proc line, steps
            for dx in d.post:  # post-op dx line (or pre-op under "same"), findings
                codes = tuple(dx.for_side(d.side, d.digit, d.lid))
                facts += [("icd10", codes, terse_dx(d, dx)), ("icd10", codes, dx.terse)]
        facts += [("icd10", tuple(c.codes), c.terse) for c in s.comorbid]  # pmh
        if s.obesity_documented:
            facts.append(("icd10", cat.obesity_codes(s.bmi),
                          ("morbid obesity" if s.bmi >= 40 else "obesity") + f", BMI {s.bmi}"))
        facts.append(("icd10", cat.TOBACCO[s.tobacco][0], cat.TOBACCO[s.tobacco][2]))
    if len(s.done) == 1:
        L.append("proc: " + names[0])
    else:
        L.append("procs:")
        L += [f"  {i}) {n}" for i, n in enumerate(names, 1)]
    L.append(f"surg: {s.surgeon.first[0]}. {s.surgeon.last} {s.surgeon.cred}")
    if s.assistants:
        for p, kind in s.assistants:
            L.append(f"asst: {p.first[0]}. {p.last} {p.cred}" + (" - no qualified resident avail" if kind == "MD-NORES" else ""))
    else:
        L.append("asst: none")
    if s.resident:
        L.append(f"res: {s.resident.first[0]}. {s.resident.last} pgy{rng.randint(2, 5)}; attending present for key/critical portions")
    L.append(f"anes: {_ANES[s.anesthesia]}")
    L.append(f"ebl: {'min' if s.ebl == 0 else str(s.ebl) + 'cc'}")
    if first.proc.approach not in ("laser", "needle", "closed"):
        L.append("spec: to path")
    if rng.random() < 0.5:
        L.append(f"implant lot {s.lot}")
    L.append("cx: none")
    hx = ["hx:"] + [f"- {x}" for x in _hx(rng, s)]
    steps = [f"- {b}" for b in _BULLETS[first.proc.approach]]
    if first.proc.tstep:
        steps.append(f"- {first.proc.tstep}")
    else:
        steps.append(f"- {first.proc.terse} done std fashion")
    if s.volume == "22":
        steps.append("- dense adhesions, +90 min, increased difficulty/work")
    elif s.volume == "52":
        steps.append("- pt couldn't tolerate, reduced procedure, partial only")
    for d in s.done[1:]:
        if d.distinct == "59":
            steps.append(f"- separate lesion ({d.post[0].terse}) excised thru separate incision, diff site")
        elif d.distinct == "XS":
            steps.append(f"- separate lesion on different structure ({d.post[0].terse}) shave bx")
        else:
            place = terse_place(d)
            steps.append(f"- then {d.proc.terse}{' ' + place if place else ''}" + (f": {d.proc.tstep}" if d.proc.tstep else ""))
    for x in rng.sample(_EXTRA, min(len(_EXTRA), s.detail * 2)):
        steps.insert(rng.randint(1, len(steps)), f"- {x}")
    if s.detail >= 6:
        hx.append("- home meds: " + ", ".join(f"{m} {d}" for m, d in rng.sample(MEDS, rng.randint(6, 16))))
    if s.detail >= 10:
        hx.append(f"- labs: hgb {rng.randint(95, 160) / 10}, plt {rng.randint(150, 400)}, cr {rng.randint(6, 14) / 10}, "
                  f"k {rng.randint(35, 50) / 10}, inr {rng.randint(9, 12) / 10}, a1c {rng.randint(50, 90) / 10}")
        hx += [f"- {x}" for x in rng.sample(_HX_LONG, rng.randint(4, len(_HX_LONG)))]
    steps.append(f"- {_CLOSE[first.proc.approach]}")
    steps.append(rng.choice(["- tol well -> pacu", "- to PACU stable", "- tolerated, pacu stable"]))
    body = ["procedure:"] + steps
    findings = "findings: " + ", ".join(dx.terse for d in s.done for dx in d.post)
    blocks = ["\n".join(L), "\n".join(hx), "\n".join(body), findings]
    if rng.random() < 0.25:  # hx first, then the header block
        blocks = [blocks[1], blocks[0]] + blocks[2:]
    blocks.append(rng.choice(["dispo: home", "dispo: pacu then home", "dispo: obs overnight", "plan: f/u 2 wk"]))
    if rng.random() < 0.4:
        blocks.append(f"call x{s.extension} w/ ?s")
    text = "\n\n".join(blocks)
    return text if rng.random() < 0.7 else text.lower()
