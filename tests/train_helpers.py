"""Small hand-made cases for the training tests (short notes keep the tiny runs tiny).

Uses the synthetic generator when it exists, so tests exercise the real corpus shape.
"""

from __future__ import annotations

import random

from opclaim.claim import Case, Claim

CATALOG = [
    ("General Surgery", "laparoscopic cholecystectomy", "47562", "Laparoscopic cholecystectomy",
     ["K80.20"], "symptomatic cholelithiasis"),
    ("General Surgery", "laparoscopic appendectomy", "44970", "Laparoscopic appendectomy",
     ["K35.80"], "acute appendicitis"),
    ("General Surgery", "open inguinal hernia repair", "49505", "Repair initial inguinal hernia",
     ["K40.90"], "right inguinal hernia"),
    ("Orthopedics", "knee arthroscopy with medial meniscectomy", "29881", "Arthroscopy knee meniscectomy",
     ["S83.241A"], "medial meniscus tear"),
    ("Orthopedics", "carpal tunnel release", "64721", "Neuroplasty median nerve at carpal tunnel",
     ["G56.01"], "right carpal tunnel syndrome"),
    ("Urology", "cystoscopy", "52000", "Cystourethroscopy", ["R31.9"], "hematuria"),
]
SURGEONS = ["Dr. A. Rivera", "Dr. K. Osei", "Dr. M. Novak"]
ASSISTANTS = ["Dr. B. Chen", "Dr. L. Haas"]


def make_cases(n: int, seed: int = 0) -> list[Case]:
    try:
        from opclaim.synth import generate_cases  # the real generator, once it exists

        try:
            return generate_cases(n, seed, style="terse", length="short")
        except TypeError:
            return generate_cases(n, seed, style="terse")
    except ImportError:
        pass
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        service, proc, cpt, desc, icd, dx = rng.choice(CATALOG)
        surgeon = rng.choice(SURGEONS)
        providers = [{"name": surgeon, "role": "surgeon",
                      "lines": [{"cpt": cpt, "modifiers": [], "description": desc}]}]
        note = f"PREOPERATIVE DIAGNOSIS: {dx}.\nPROCEDURE: {proc}.\nSURGEON: {surgeon}."
        if rng.random() < 0.4:
            asst = rng.choice(ASSISTANTS)
            providers.append({"name": asst, "role": "assistant",
                              "lines": [{"cpt": cpt, "modifiers": ["80"], "description": desc}]})
            note += f"\nASSISTANT: {asst}."
        note += "\nFINDINGS: as expected. Patient tolerated the procedure well."
        cases.append(Case(id=f"t{seed}-{i:04d}", note=note,
                          claim=Claim.from_dict({"icd10": icd, "providers": providers}),
                          date=f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}", service=service))
    return cases
