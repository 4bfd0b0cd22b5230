"""The `dictation` writer: a formal operative report in full sentences, as transcribed from a
surgeon's dictation (upper-case headers, numbered lists, occasional transcription artifacts)."""

from __future__ import annotations

import datetime as dt
import random

from opclaim.synth import catalog as cat
from opclaim.synth.names import MEDS
from opclaim.synth.places import formal_dx, formal_place, formal_proc
from opclaim.synth.scenario import Scenario

_ANES = {"general": "General endotracheal anesthesia", "mac": "Monitored anesthesia care with topical and intracameral anesthesia",
         "block": "Retrobulbar block with monitored anesthesia care", "local": "Local anesthesia with 1% lidocaine with epinephrine",
         "topical": "Topical proparacaine"}
_HDR = {
    "pre": ["PREOPERATIVE DIAGNOSIS", "PREOPERATIVE DIAGNOSES", "DIAGNOSIS BEFORE OPERATION"],
    "post": ["POSTOPERATIVE DIAGNOSIS", "POSTOPERATIVE DIAGNOSES", "DIAGNOSIS AFTER OPERATION"],
    "proc": ["PROCEDURE PERFORMED", "PROCEDURES PERFORMED", "OPERATION", "NAME OF OPERATION"],
    "ind": ["INDICATIONS FOR PROCEDURE", "INDICATIONS", "HISTORY AND INDICATIONS"],
    "desc": ["DESCRIPTION OF PROCEDURE", "DETAILS OF THE OPERATION", "OPERATIVE TECHNIQUE", "PROCEDURE IN DETAIL"],
}

# Generic operative steps by approach: (positioning/prep, access, closure).
_STEPS = {
    "eye": ("The operative eye was prepped with povidone-iodine and draped in the usual sterile ophthalmic fashion, and a lid speculum was placed.",
            "Under the operating microscope, paracentesis incisions were created and viscoelastic was instilled into the anterior chamber.",
            "The wounds were hydrated and found to be watertight, and intracameral antibiotic was given."),
    "laser": ("The eye was anesthetized with topical drops and a contact lens was placed on the cornea.",
              "Laser energy was applied under direct visualization at the slit lamp.",
              "Intraocular pressure was checked after the treatment and was acceptable."),
    "eyelid": ("The face was prepped and draped in the usual sterile fashion, and the planned excision was marked with a surgical marker.",
               "Local anesthetic with epinephrine was infiltrated into the eyelid and an incision was made along the markings.",
               "The skin was closed with a running 6-0 polypropylene suture and antibiotic ointment was applied."),
    "scope": ("The extremity was prepped and draped in the usual sterile fashion after a well-padded tourniquet was applied.",
              "Standard arthroscopic portals were established and a diagnostic arthroscopy was performed.",
              "The portals were closed with nylon sutures and a sterile compressive dressing was applied."),
    "open": ("The patient was positioned supine with all bony prominences padded, then prepped and draped in the usual sterile fashion.",
             "A skin incision was made and carried down through the subcutaneous tissue with electrocautery, with careful hemostasis.",
             "The wound was irrigated, the deep layers were closed with absorbable suture, and the skin was closed with staples."),
    "closed": ("The patient was positioned supine and the extremity was examined under anesthesia.",
               "Gentle, controlled force was applied under fluoroscopic or direct observation.",
               "The extremity was placed in a soft dressing and neurovascular status was confirmed."),
    "lap": ("The abdomen was prepped and draped in the usual sterile fashion, and a Foley catheter was placed.",
            "Pneumoperitoneum was established through an umbilical port using the Hasson technique, and additional ports were placed under direct vision.",
            "The fascia at the umbilical port was closed with 0 absorbable suture and the skin was closed with subcuticular 4-0 Monocryl."),
    "skin": ("The area was prepped and draped in the usual sterile fashion, and the lesion margins were marked.",
             "Local anesthetic was infiltrated and an elliptical incision was made around the lesion with appropriate margins.",
             "The wound was closed in layers with buried dermal sutures and a running epidermal suture."),
    "cysto": ("The patient was placed in the dorsal lithotomy position, prepped and draped in the usual sterile fashion.",
              "The cystoscope was inserted per urethra under direct vision and the bladder was inspected in its entirety.",
              "The bladder was drained and a Foley catheter was left in place as needed."),
    "oral": ("The patient was positioned supine with a shoulder roll, and a mouth gag was inserted and suspended.",
             "The oropharynx was inspected and the operative field was exposed.",
             "Hemostasis was confirmed with suction electrocautery and the oropharynx was irrigated."),
    "ear": ("The head was turned and the ear was prepped and draped in sterile fashion.",
            "Under the operating microscope, the external canal was cleaned of cerumen and the tympanic membrane was visualized.",
            "The canal was packed with antibiotic-soaked gelfoam as needed."),
    "nasal": ("The nose was decongested with oxymetazoline pledgets and the patient was prepped and draped.",
              "The nasal cavity was examined with a zero-degree endoscope and local anesthetic was injected.",
              "Dissolvable packing was placed and hemostasis was confirmed."),
    "hsc": ("The patient was placed in dorsal lithotomy and a bimanual examination was performed.",
            "The cervix was dilated and the hysteroscope was introduced under direct vision with saline distension.",
            "Instruments were removed and the fluid deficit was recorded as acceptable."),
    "vaginal": ("The patient was placed in dorsal lithotomy, prepped and draped, and the bladder was drained.",
                "A weighted speculum was placed and the cervix was grasped with a single-tooth tenaculum.",
                "Hemostasis was assured and all instruments were removed."),
    "spine": ("The patient was positioned prone on a Jackson table with the abdomen free, and the level was confirmed fluoroscopically.",
              "A midline incision was made and subperiosteal dissection exposed the lamina at the operative level.",
              "The wound was irrigated, a subfascial drain was placed as needed, and the fascia was closed in layers."),
    "cranial": ("The head was secured in pins and neuronavigation was registered.",
                "A skin flap and craniotomy were fashioned, and the dura was opened in a curvilinear fashion.",
                "The dura was closed in watertight fashion, the bone flap was replaced with plates, and the scalp was closed in layers."),
    "needle": ("The patient was positioned prone and the skin was prepped with chlorhexidine and draped.",
               "Under fluoroscopic guidance, a spinal needle was advanced to the target, and contrast confirmed appropriate spread without vascular uptake.",
               "The needle was withdrawn and a bandage was applied."),
    "chest": ("The patient was positioned appropriately, single-lung ventilation was confirmed when required, and the chest was prepped and draped.",
              "Access to the thoracic cavity was obtained and the pleural space was inspected.",
              "A chest tube was left in place and the incisions were closed in layers."),
    "endo": ("The patient was placed in the left lateral decubitus position and sedation was administered.",
             "The endoscope was introduced and advanced under direct visualization.",
             "The endoscope was withdrawn, and air was suctioned from the lumen."),
    "bronch": ("The patient was placed supine and topical lidocaine was applied to the airway.",
               "The bronchoscope was introduced and a complete airway survey was carried out.",
               "The bronchoscope was removed and there was no significant bleeding."),
    "anal": ("The patient was placed in the prone jackknife position, prepped and draped in sterile fashion.",
             "An anoscope was inserted and the hemorrhoidal columns were examined.",
             "Hemostasis was confirmed and a dressing was applied."),
}

# Extra narrative paragraphs for longer reports (drawn without replacement): _PRE goes before
# the operative steps, _POST after them.
_PRE = [
    "Prior to incision, weight-based intravenous cefazolin was administered within sixty minutes, and sequential compression devices were placed on both lower extremities and confirmed to be functioning.",
    "The anesthesia team confirmed adequate depth of anesthesia and muscle relaxation. Eye protection was applied, and all pressure points including the elbows, heels and occiput were carefully padded and rechecked after final positioning.",
    "A formal surgical safety checklist was completed with the circulating nurse, the scrub technologist and the anesthesia provider. Allergies, antibiotic timing, anticipated blood loss, the availability of imaging and of all required implants were reviewed aloud, and everyone agreed to proceed.",
    "Throughout the case the operative field was irrigated intermittently with warm saline. Small bleeding points were controlled with bipolar electrocautery, taking care to avoid thermal spread to adjacent structures.",
    "At this point the field was inspected carefully under good lighting. There was no evidence of injury to surrounding structures, and hemostasis was satisfactory. The anatomy was reviewed once more before proceeding with the next step.",
    "Local anesthetic, 0.25% bupivacaine with epinephrine, was infiltrated into the wound edges for postoperative analgesia, taking care to aspirate before each injection to avoid intravascular administration.",
    "During the case the patient's blood pressure remained within ten percent of baseline. There were no episodes of desaturation, arrhythmia or hypotension requiring vasopressors, and the temperature was maintained with a forced-air warming blanket.",
    "The case was performed in the main operating room with standard monitoring. Warmed fluids were used, and the total crystalloid volume is recorded in the anesthesia record.",
    "The operative plan, including the possibility of additional procedures depending on the intraoperative findings, had been discussed in detail at the preoperative visit, and the patient's written consent covered these possibilities.",
    "The patient's preoperative laboratory studies, including a complete blood count, basic metabolic panel and coagulation profile, were reviewed and were within acceptable limits for surgery.",
    "An attempt was made to minimize tissue trauma throughout. Retractors were repositioned periodically, and the operative time was kept as short as safely possible.",
]
_POST = [
    "The surgical technologist confirmed that the sponge, needle and instrument counts were correct on two occasions, first before closure of the deep layer and again at the conclusion of the procedure, and the circulating nurse documented both counts.",
    "The findings were discussed with the family in the waiting area after the procedure. Questions were answered, and they were told to expect the final pathology report at the postoperative visit in approximately two weeks.",
    "Postoperative instructions were reviewed, including activity restrictions, wound care, signs of infection, pain control with a multimodal regimen that limits opioid use, and when to call the office. Written instructions were provided in the patient's preferred language.",
    "The patient was awakened from anesthesia without difficulty, extubated in the operating room when applicable, and transported to the post-anesthesia care unit on supplemental oxygen, with stable vital signs and adequate pain control.",
    "Venous thromboembolism risk was assessed using the institutional risk score. Mechanical prophylaxis will continue, and pharmacologic prophylaxis will be started on postoperative day one if hemostasis remains satisfactory.",
    "All instruments used in the case were accounted for and returned to sterile processing. The implant record, including manufacturer, size and lot number, was placed in the chart by the circulating nurse.",
    "A final inspection of the operative site showed no active bleeding. The dressing was applied under sterile conditions, and the drapes were removed only after the dressing was secured.",
    "Given the patient's medical history, the plan for resumption of home medications was discussed with the primary care team, and the perioperative glucose and blood pressure goals were reviewed with the nursing staff.",
    "Intraoperative photographs were obtained for the medical record and for patient education. These were stored in the secure clinical imaging system and are not included in this report.",
    "Specimens were labeled in the room, read back by the circulating nurse and sent to pathology with the appropriate requisition and clinical history.",
    "The surgical site was re-examined at the end of the procedure after the release of any retraction, and there was no hematoma or expanding swelling.",
]

# Other ways surgeons name the same operation (the catalog name stays the most common one).
SYNONYMS = {
    "66984": ["cataract extraction by phacoemulsification with posterior chamber lens implant",
              "extracapsular cataract extraction with intraocular lens placement"],
    "47562": ["cholecystectomy, laparoscopic", "laparoscopic removal of the gallbladder"],
    "29881": ["knee arthroscopy with partial medial meniscectomy"],
    "27447": ["total knee replacement", "primary total knee arthroplasty"],
    "27130": ["total hip replacement", "primary total hip arthroplasty"],
    "44970": ["appendectomy, laparoscopic"],
    "42826": ["palatine tonsillectomy"],
    "52000": ["diagnostic cystoscopy"],
    "64721": ["median nerve decompression at the carpal tunnel"],
    "67028": ["intravitreal anti-VEGF injection"],
    "29827": ["rotator cuff repair, arthroscopic"],
    "49650": ["laparoscopic inguinal herniorrhaphy with mesh"],
    "45385": ["colonoscopy with polypectomy by snare technique"],
}

# Long-form history for the long tail (some reports carry pages of history).
_HISTORY = [
    "The symptoms began gradually over the past year and have steadily worsened. The patient describes difficulty with work and with household tasks, and reports that symptoms are worse at the end of the day and improve only partially with rest.",
    "Previous treatment included activity modification, a course of anti-inflammatory medication, a supervised home exercise program and a period of observation. None of these measures produced lasting relief, and the patient returned to clinic requesting definitive treatment.",
    "Imaging obtained at an outside facility was reviewed personally and discussed with the radiologist. The images correlate with the examination findings and support the planned operation. No additional studies were felt to be necessary before surgery.",
    "Risks discussed included bleeding, infection, injury to nearby nerves, vessels and organs, the need for further surgery, anesthetic risks, blood clots, and the possibility that symptoms may not fully resolve. Alternatives, including continued nonoperative care, were reviewed.",
    "The patient was seen by the preoperative evaluation clinic, where the anesthesia team reviewed the medical history, airway examination and prior anesthetic records. No barriers to surgery were identified, and routine instructions for fasting and medication management were given.",
    "The patient lives at home with family support, is independent in daily activities, and has arranged transportation and help at home for the first several days after surgery. Goals of care were discussed and the patient wishes full treatment.",
    "On examination in clinic the findings were consistent with the diagnosis above. Vital signs were stable and the remainder of the examination was unremarkable apart from the findings attributable to the surgical condition.",
    "The patient was counseled about the expected recovery, including the time to return to work, driving restrictions, the likely duration of postoperative pain, and the schedule of follow-up visits. Printed material was provided and all questions were answered to the patient's satisfaction.",
]


def _fmt_date(rng: random.Random, iso: str) -> str:
    d = dt.date.fromisoformat(iso)
    return rng.choice([d.strftime("%m/%d/%Y"), d.strftime("%B %d, %Y").replace(" 0", " "), d.isoformat()])


def _numbered(items: list[str]) -> str:
    if len(items) == 1:
        return items[0] + "."
    return "\n" + "\n".join(f"{i}. {x}." for i, x in enumerate(items, 1))


def _pron(s: Scenario):
    return ("She", "her", "woman") if s.sex == "F" else ("He", "his", "man")


def _indications(rng: random.Random, s: Scenario) -> str:
    he, his, man = _pron(s)
    first = s.done[0]
    who = f"{'girl' if s.sex == 'F' else 'boy'}" if s.age < 12 else man
    article = "an" if str(s.age).startswith("8") or s.age in (11, 18) else "a"
    parts = [f"This is {article} {s.age}-year-old {who} with {first.pre[0].words}"
             + (f" of the {formal_place(first)}" if formal_place(first) else "") + "."]
    if s.detail >= 5:
        parts += rng.sample(_HISTORY, min(len(_HISTORY), (s.detail - 3) // 2))
    parts.append("Surgery was recommended." if s.short else rng.choice([
        f"{he} has failed conservative management and, after a discussion of the risks, benefits and alternatives, elected to proceed.",
        f"Symptoms have progressed despite nonoperative care and now limit {his} daily activities; surgery was recommended.",
        f"After a thorough discussion of the options, including observation, {he.lower()} wished to proceed with surgery.",
    ]))
    if s.global_period:
        mod, prior, _, days = s.global_period
        if mod == "78":
            parts.append(f"{he} underwent {prior} by me {days} days ago and is within the postoperative global period. "
                         f"{he} now requires an unplanned return to the operating room for a complication of that operation.")
        else:
            parts.append(f"Of note, {he.lower()} underwent {prior} by me {days} days ago and remains within that operation's "
                         "global period; today's procedure is unrelated to that operation.")
    pmh = [c.words for c in s.comorbid]
    if s.obesity_documented:
        pmh.append(("morbid obesity" if s.bmi >= 40 else "obesity") + f" with a body mass index of {s.bmi}")
    if s.age >= 12:
        parts.append("PAST MEDICAL HISTORY: " + (", ".join(pmh) if pmh else "Otherwise noncontributory") + ".")
    if s.prior_surgeries:
        parts.append("PAST SURGICAL HISTORY: " + ", ".join(f"{n} in {y}" for n, _, y in s.prior_surgeries) + ".")
    if s.age >= 12:
        tob = cat.TOBACCO[s.tobacco][1].replace("She/He", he)
        parts.append(f"SOCIAL HISTORY: {tob if tob.startswith(he) else he + ' ' + tob}.")
        if not s.obesity_documented:
            parts.append(f"Body mass index today is {s.bmi}.")
    if s.detail >= 6 and s.age >= 12:
        meds = rng.sample(MEDS, rng.randint(6, 14))
        parts.append("CURRENT MEDICATIONS: " + "; ".join(f"{m} {d}" for m, d in meds) + ".")
    if s.ruled_out:
        x, _, test = s.ruled_out
        parts.append(f"{x[0].upper() + x[1:]} was considered and ruled out by {test}.")
    return " ".join(parts)


def _description(rng: random.Random, s: Scenario) -> list[str]:
    he, his, _ = _pron(s)
    first = s.done[0]
    prep, access, close = _STEPS[first.proc.approach]
    anes = {"general": "general endotracheal anesthesia was induced without difficulty",
            "mac": "monitored anesthesia care was initiated", "block": "a regional block was placed",
            "local": "local anesthesia was administered", "topical": "topical anesthesia was instilled"}[s.anesthesia]
    place = formal_place(first)
    if s.short:
        paras = [f"{he} was brought to the operating room and {anes}. A time-out was performed."]
    else:
        paras = [f"The patient was identified in the preoperative holding area, and the operative site{' (' + place + ')' if place else ''} "
                 f"was marked. Informed consent was confirmed. {he} was brought to the operating room and {anes}. {prep} "
                 "A time-out was performed confirming the correct patient, procedure, side and site."]
    body = [access, first.proc.step or f"The {first.proc.name} was then performed in the standard fashion."]
    if s.volume == "22":
        body.append("Dense adhesions and distorted anatomy were encountered, and the procedure took approximately ninety "
                    "minutes longer than usual, with substantially increased technical difficulty and work.")
    elif s.volume == "52":
        body.append("Because of the patient's limited tolerance, the planned procedure was reduced in scope at the surgeon's "
                    "discretion and only a portion of the usual service was completed.")
    paras.append(" ".join(body))
    for d in s.done[1:]:
        if d.distinct == "59":
            paras.append(f"Attention was then turned to a separate lesion, {d.post[0].words}, which was excised through a "
                         "separate incision at a distinct site, and closed primarily.")
        elif d.distinct == "XS":
            paras.append(f"A separate lesion on a different anatomic structure, clinically {d.post[0].words}, was then "
                         "biopsied by shave technique and hemostasis obtained with aluminum chloride.")
        else:
            where = formal_place(d)
            paras.append(f"Attention was then turned to the {d.proc.name}{' on the ' + where if where else ''}. "
                         + (d.proc.step or "This was carried out in the standard fashion without difficulty."))
    paras.append(close)
    n_pre = (s.detail + 1) // 2
    paras[1:1] = rng.sample(_PRE, min(n_pre, len(_PRE)))
    paras += rng.sample(_POST, min(s.detail - n_pre, len(_POST)))
    paras.append(f"{he} tolerated the procedure well." if s.short else
                 f"{he} tolerated the procedure well and was taken to the recovery area in stable condition. "
                 "All counts were correct at the end of the case.")
    return paras


def write(rng: random.Random, s: Scenario, facts: list | None = None) -> str:
    """The note. `facts`, when given, receives (system, codes, phrase) for every phrase this writer
    puts in the note to state a coded fact (scenario.gold_evidence turns them into spans)."""
    he, his, _ = _pron(s)
    first = s.done[0]
    pre = [formal_dx(d, dx) for d in s.done for dx in d.pre]
    post = [formal_dx(d, dx) for d in s.done for dx in d.post]
    procs = [formal_proc(d, rng.choice([d.proc.name] + SYNONYMS.get(d.proc.cpt, []))) for d in s.done]
    if facts is not None:
        for d, name in zip(s.done, procs, strict=True):
            facts += [("cpt", (d.proc.cpt,), name), ("cpt", (d.proc.cpt,), d.proc.name)]
            for dx in d.post:  # the post-operative diagnosis line (or the pre-operative one under "Same."), findings
                codes = tuple(dx.for_side(d.side, d.digit, d.lid))
                facts += [("icd10", codes, formal_dx(d, dx)), ("icd10", codes, dx.words)]
        facts += [("icd10", tuple(c.codes), c.words) for c in s.comorbid]  # PAST MEDICAL HISTORY
        if s.obesity_documented:
            facts.append(("icd10", cat.obesity_codes(s.bmi), f"obesity with a body mass index of {s.bmi}"))
        codes, sentence, _ = cat.TOBACCO[s.tobacco]
        facts.append(("icd10", codes, sentence.replace("She/He ", "")))  # SOCIAL HISTORY
    header = [f"OPERATIVE REPORT\nDATE OF OPERATION: {_fmt_date(rng, s.date)}\nMEDICAL RECORD NUMBER: {s.mrn}"]
    dxs = [f"{rng.choice(_HDR['pre'])}: {_numbered(pre)}",
           f"{rng.choice(_HDR['post'])}: " + ("Same." if post == pre and rng.random() < 0.6 else _numbered(post))]
    staff = [f"SURGEON: {s.surgeon.first} {s.surgeon.last}, {s.surgeon.cred}."]
    if s.assistants:
        rows = []
        for p, kind in s.assistants:
            row = f"{p.first} {p.last}, {p.cred}"
            if kind == "MD-NORES":
                row += " (no qualified resident was available to assist)"
            rows.append(row)
        staff.append("ASSISTANT" + ("S" if len(rows) > 1 else "") + ": " + "; ".join(rows) + ".")
    else:
        staff.append("ASSISTANT: None.")
    if s.resident:
        staff.append(f"RESIDENT: {s.resident.first} {s.resident.last}, MD (PGY-{rng.randint(2, 5)}).")
    staff.append(f"ANESTHESIA: {_ANES[s.anesthesia]}." + (f" Anesthesiologist: {s.anesthesiologist.first} {s.anesthesiologist.last}, MD."
                                                          if s.anesthesia in ('general', 'mac', 'block') else ""))
    facts = [f"ESTIMATED BLOOD LOSS: {'Minimal' if s.ebl == 0 else str(s.ebl) + ' mL'}.",
             f"SPECIMENS: {'None' if first.proc.approach in ('laser', 'needle', 'closed') else 'Sent to pathology for permanent section'}.",
             f"IMPLANTS: {'None' if rng.random() < 0.5 else 'As recorded in the implant log, lot number ' + s.lot}.",
             "DRAINS: None.",
             f"COMPLICATIONS: {rng.choice(['None', 'None apparent', 'No immediate complications'])}."]
    ind = f"{rng.choice(_HDR['ind'])}: {_indications(rng, s)}"
    desc = f"{rng.choice(_HDR['desc'])}: " + "\n\n".join(_description(rng, s))
    findings = f"FINDINGS: {', '.join(dx.words for d in s.done for dx in d.post)}" + (
        "; findings at surgery differed from the preoperative impression." if post != pre else ", as expected preoperatively.")
    dispo = f"DISPOSITION: {rng.choice(['To the PACU in stable condition', 'Discharged home from recovery', 'Admitted for observation overnight'])}."
    sections = header + dxs + [f"{rng.choice(_HDR['proc'])}: {_numbered(procs)}"] + staff + facts
    # Some dictating surgeons give the indications first; the header block stays in place.
    if rng.random() < 0.3:
        sections = header + [ind] + sections[1:] + [desc, findings, dispo]
    else:
        sections = sections + [ind, desc, findings, dispo]
    if s.resident:
        sections.append(f"ATTESTATION: I, {s.surgeon.first} {s.surgeon.last}, was present for the key and critical portions "
                        "of this procedure performed with the resident named above and was immediately available throughout.")
    tail = f"Dictated by {s.surgeon.first} {s.surgeon.last}, {s.surgeon.cred}. Job #{s.lot}{s.mrn[-2:]}."
    if rng.random() < 0.5:
        tail += f" Questions regarding this report may be directed to extension {s.extension}."
    if rng.random() < 0.3:
        tail += " This dictation was prepared with voice recognition software; please excuse transcription errors."
    sections.append(tail)
    text = "\n\n".join(sections)
    if rng.random() < 0.15:
        text = text.replace(" was marked.", " was marked (inaudible).", 1)
    if rng.random() < 0.1:
        text = text.replace("procedure well", "procedure well period new paragraph", 1)
    return text
