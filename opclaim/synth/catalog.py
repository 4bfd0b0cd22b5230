"""The synthetic catalog: surgical services, procedures (real CPT codes), diagnoses (billable
ICD-10-CM codes) and the secondary diagnoses a coder picks up from the history.

Descriptions are our own plain words, not the AMA's or CMS's text. Each procedure carries two
names (dictation and terse) so the writers never share one string with a flag.

Laterality kinds decide which modifiers a side turns into:
  side   -> RT / LT (bilateral: 50 when `bilat`)
  eyelid -> E1..E4 (upper/lower, left/right)
  finger -> FA, F1..F9
  toe    -> TA, T1..T9
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dx:
    """A diagnosis: a code (or {side: code}), a formal phrase and a terse phrase."""

    code: object  # str, or dict keyed "R"/"L"/"B" (or "R1".."L5" for digits, "RU".."LL" for eyelids)
    words: str
    terse: str

    def for_side(self, side: str | None, digit: int | None = None, lid: str | None = None) -> list[str]:
        if isinstance(self.code, str):
            return [self.code]
        c = self.code
        if side == "B":
            if "B" in c:
                return [c["B"]]
            return [c["R" + lid], c["L" + lid]] if lid else [c["R"], c["L"]]
        if lid:
            return [c[side + lid]]
        if digit is not None and f"{side}{digit}" in c:
            return [c[f"{side}{digit}"]]
        return [c[side]]


@dataclass(frozen=True)
class Proc:
    service: str
    cpt: str
    desc: str       # our own short description (goes on the claim line)
    name: str       # dictation wording
    terse: str      # terse wording
    approach: str   # picks generic narrative steps
    dx: tuple
    lat: str | None = None
    bilat: bool = False
    up: dict = field(default_factory=dict)  # pre-op code -> Dx found at surgery (post-op differs)
    comp: tuple = ()  # companion CPTs done in the same session (-> 51)
    step: str = ""  # one procedure-specific sentence (dictation)
    tstep: str = ""  # the terse equivalent


def D(code, words, terse=None):
    return Dx(code, words, terse or words)


def RL(right, left, both=None):
    d = {"R": right, "L": left}
    if both:
        d["B"] = both
    return d


# Share of cases per service, after the study's surgical service mix.
SERVICE_WEIGHTS = {
    "Ophthalmology": 31.0, "Orthopedics": 24.0, "General Surgery": 13.0, "Urology": 8.0,
    "Otolaryngology": 7.0, "Gynecology": 5.5, "Plastic Surgery": 4.0, "Neurosurgery": 2.5,
    "Pain Management": 1.0, "Cardiothoracic Surgery": 0.8, "Dermatology": 0.8,
    "Gastroenterology": 0.8, "Obstetrics": 0.6, "Podiatry": 0.8, "Pulmonology": 0.5,
    "Pediatric Surgery": 0.5,
}

# ------------------------------------------------------------------ ophthalmology
_CAT = (
    D(RL("H25.11", "H25.12"), "age-related nuclear cataract", "nuclear sclerotic cataract"),
    D(RL("H25.011", "H25.012"), "cortical age-related cataract", "cortical cataract"),
    D(RL("H25.041", "H25.042"), "posterior subcapsular polar age-related cataract", "PSC cataract"),
    D(RL("H25.811", "H25.812"), "combined forms of age-related cataract", "combined cataract"),
    D(RL("H26.9", "H26.9"), "cataract, not further specified", "cataract"),
)
_GLAU = (
    D(RL("H40.1111", "H40.1121"), "primary open-angle glaucoma, mild stage", "POAG mild"),
    D(RL("H40.1112", "H40.1122"), "primary open-angle glaucoma, moderate stage", "POAG mod"),
    D(RL("H40.1113", "H40.1123"), "primary open-angle glaucoma, severe stage", "POAG severe"),
    D(RL("H40.1411", "H40.1421"), "capsular glaucoma with pseudoexfoliation of the lens, mild stage", "PXF glaucoma mild"),
)
_RETINA = (
    D(RL("H43.11", "H43.12"), "vitreous hemorrhage", "VH"),
    D(RL("H35.371", "H35.372"), "epiretinal membrane (macular pucker)", "ERM"),
    D(RL("H35.341", "H35.342"), "macular hole", "mac hole"),
    D(RL("H33.011", "H33.012"), "retinal detachment with a single break", "RD w/ single break"),
    D(RL("H33.021", "H33.022"), "retinal detachment with multiple breaks", "RD w/ multiple breaks"),
)
_AMD = (
    D(RL("H35.3211", "H35.3221"), "exudative age-related macular degeneration with active choroidal neovascularization", "wet AMD active CNV"),
    D(RL("E11.3511", "E11.3512"), "type 2 diabetes with proliferative diabetic retinopathy and macular edema", "DM2 w/ PDR + DME"),
    D(RL("H34.8110", "H34.8120"), "central retinal vein occlusion with macular edema", "CRVO w/ ME"),
)
OPHTHALMOLOGY = [
    Proc("Ophthalmology", "66984", "Cataract removal with lens implant, routine", "phacoemulsification of cataract with posterior chamber intraocular lens implantation",
         "phaco w/ PCIOL", "eye", _CAT, lat="side",
         step="A clear corneal incision was made, capsulorrhexis completed, and the nucleus removed by phacoemulsification before the lens was placed in the bag.",
         tstep="CCI, CCC, phaco, I/A, IOL in bag"),
    Proc("Ophthalmology", "66982", "Complex cataract removal with lens implant", "complex phacoemulsification of cataract with intraocular lens, using iris expansion ring",
         "complex phaco w/ IOL + Malyugin ring", "eye", _CAT[:4], lat="side",
         step="Because the pupil dilated poorly, an iris expansion ring was placed before capsulorrhexis.",
         tstep="small pupil -> Malyugin ring"),
    Proc("Ophthalmology", "66821", "Laser opening of clouded posterior capsule", "Nd:YAG laser posterior capsulotomy",
         "YAG cap", "laser", (D(RL("H26.491", "H26.492"), "posterior capsular opacification", "PCO"),), lat="side"),
    Proc("Ophthalmology", "66170", "Glaucoma filtering operation (trabeculectomy)", "trabeculectomy with mitomycin C",
         "trab w/ MMC", "eye", _GLAU, lat="side",
         step="A fornix-based conjunctival flap was raised, mitomycin C applied, and a partial-thickness scleral flap fashioned over the sclerostomy.",
         tstep="fornix-based flap, MMC, scleral flap, sclerostomy, PI"),
    Proc("Ophthalmology", "66180", "Glaucoma drainage tube to an outside reservoir", "Ahmed glaucoma drainage device implantation",
         "Ahmed tube", "eye", _GLAU, lat="side"),
    Proc("Ophthalmology", "65855", "Laser trabeculoplasty", "selective laser trabeculoplasty", "SLT", "laser", _GLAU[:2], lat="side"),
    Proc("Ophthalmology", "66761", "Laser iridotomy", "laser peripheral iridotomy", "LPI", "laser",
         (D(RL("H40.031", "H40.032"), "anatomical narrow angle", "narrow angle"),), lat="side"),
    Proc("Ophthalmology", "67036", "Removal of vitreous through the pars plana", "pars plana vitrectomy", "PPV", "eye", _RETINA[:1], lat="side"),
    Proc("Ophthalmology", "67041", "Vitrectomy with membrane peel", "pars plana vitrectomy with epiretinal membrane peel",
         "PPV/MP", "eye", _RETINA[1:2], lat="side",
         step="The epiretinal membrane was stained and peeled from the macula with end-gripping forceps.",
         tstep="ERM stained + peeled"),
    Proc("Ophthalmology", "67042", "Vitrectomy with internal limiting membrane peel", "pars plana vitrectomy with internal limiting membrane peel and gas tamponade",
         "PPV/ILM peel/gas", "eye", _RETINA[2:3], lat="side"),
    Proc("Ophthalmology", "67108", "Retinal detachment repair with vitrectomy", "repair of retinal detachment with pars plana vitrectomy and endolaser",
         "RD repair: PPV/EL/gas", "eye", _RETINA[3:], lat="side"),
    Proc("Ophthalmology", "67107", "Retinal detachment repair with scleral buckle", "scleral buckling for retinal detachment",
         "SB for RD", "eye", _RETINA[3:], lat="side"),
    Proc("Ophthalmology", "67028", "Injection of medication into the vitreous", "intravitreal injection of anti-VEGF agent",
         "IVI anti-VEGF", "eye", _AMD, lat="side"),
    Proc("Ophthalmology", "65426", "Pterygium removal with graft", "excision of pterygium with conjunctival autograft",
         "pterygium exc w/ CAG", "eye", (D(RL("H11.011", "H11.012"), "amyloid pterygium", "pterygium"),
                                         D(RL("H11.041", "H11.042"), "peripheral pterygium, stationary", "stationary pterygium")), lat="side"),
    Proc("Ophthalmology", "65756", "Corneal endothelial transplant", "Descemet stripping endothelial keratoplasty",
         "DSEK", "eye", (D(RL("H18.511", "H18.512"), "Fuchs endothelial corneal dystrophy", "Fuchs dystrophy"),
                          D(RL("H18.11", "H18.12"), "bullous keratopathy", "bullous keratopathy")), lat="side"),
    Proc("Ophthalmology", "65730", "Full-thickness corneal transplant", "penetrating keratoplasty",
         "PKP", "eye", (D(RL("H18.621", "H18.622"), "unstable keratoconus", "unstable KCN"),
                         D(RL("H17.11", "H17.12"), "central corneal opacity", "central corneal scar")), lat="side"),
    Proc("Ophthalmology", "67311", "Strabismus operation on one horizontal muscle", "recession of one horizontal rectus muscle",
         "1-muscle rec", "eye", (D("H50.10", "exotropia", "XT"), D("H50.00", "esotropia", "ET")), lat="side"),
    Proc("Ophthalmology", "15823", "Upper eyelid skin removal for heavy hooding", "functional upper eyelid blepharoplasty",
         "upper bleph", "eyelid", (D({"RU": "H02.831", "LU": "H02.834"}, "dermatochalasis of the upper eyelid", "dermatochalasis"),),
         lat="eyelid", bilat=True),
    Proc("Ophthalmology", "67904", "Ptosis repair by levator advancement", "external levator advancement for blepharoptosis",
         "ext levator adv", "eyelid", (D({"RU": "H02.401", "LU": "H02.402", "B": "H02.403"}, "ptosis of the eyelid", "ptosis"),
                                       D({"RU": "H02.411", "LU": "H02.412", "B": "H02.413"}, "mechanical ptosis of the eyelid", "mech ptosis")),
         lat="eyelid", bilat=True),
    Proc("Ophthalmology", "67800", "Excision of one chalazion", "excision of chalazion",
         "chalazion I&C", "eyelid", (D({"RU": "H00.11", "RL": "H00.12", "LU": "H00.14", "LL": "H00.15"}, "chalazion", "chalazion"),), lat="eyelid"),
    Proc("Ophthalmology", "67917", "Ectropion repair by lateral tarsal strip", "ectropion repair with lateral tarsal strip",
         "LTS for ectropion", "eyelid", (D({"RL": "H02.132", "LL": "H02.135"}, "senile ectropion of the lower eyelid", "involutional ectropion"),),
         lat="eyelid"),
    Proc("Ophthalmology", "67924", "Entropion repair, extensive", "entropion repair with tarsal strip and retractor reinsertion",
         "entropion repair", "eyelid", (D({"RL": "H02.032", "LL": "H02.035"}, "senile entropion of the lower eyelid", "involutional entropion"),),
         lat="eyelid"),
]

# ------------------------------------------------------------------ orthopedics
_MEN = (
    D(RL("S83.241A", "S83.242A"), "acute tear of the medial meniscus", "acute MMT"),
    D(RL("M23.221", "M23.222"), "degenerative tear of the posterior horn of the medial meniscus", "degen PHMM tear"),
    D(RL("M23.261", "M23.262"), "old tear of the lateral meniscus", "old LMT"),
)
_RC = (
    D(RL("M75.121", "M75.122"), "complete nontraumatic rotator cuff tear", "full-thickness RCT"),
    D(RL("M75.111", "M75.112"), "incomplete nontraumatic rotator cuff tear", "partial RCT"),
    D(RL("S46.011A", "S46.012A"), "traumatic strain of the rotator cuff", "traumatic RC injury"),
)
_KOA = (D(RL("M17.11", "M17.12", "M17.0"), "primary osteoarthritis of the knee", "knee OA"),
        D(RL("M17.31", "M17.32"), "post-traumatic osteoarthritis of the knee", "post-traumatic knee OA"))
_HOA = (D(RL("M16.11", "M16.12"), "primary osteoarthritis of the hip", "hip OA"),
        D(RL("M87.051", "M87.052"), "idiopathic avascular necrosis of the femoral head", "AVN fem head"))
_TRIG = D({f"{s}{d}": f"M65.3{d}{1 if s == 'R' else 2}" for s in "RL" for d in range(1, 6)},
          "stenosing tenosynovitis (trigger digit)", "trigger finger")
ORTHOPEDICS = [
    Proc("Orthopedics", "29881", "Knee arthroscopy with partial meniscectomy, one compartment", "arthroscopic partial medial meniscectomy of the knee",
         "knee scope w/ PMM", "scope", _MEN, lat="side",
         up={"M23.221": D(RL("M23.231", "M23.232"), "degenerative tear of the posterior horn of the medial meniscus with a displaced flap fragment", "flap tear PHMM")},
         step="A complex tear of the posterior horn was identified and debrided back to a stable rim with a shaver and basket forceps.",
         tstep="PHMM tear debrided to stable rim"),
    Proc("Orthopedics", "29880", "Knee arthroscopy with partial meniscectomy, both compartments", "arthroscopic medial and lateral meniscectomies of the knee",
         "knee scope w/ med + lat menisc", "scope", _MEN, lat="side"),
    Proc("Orthopedics", "29888", "Arthroscopic ACL reconstruction", "arthroscopically aided anterior cruciate ligament reconstruction with hamstring autograft",
         "ACLR (HS auto)", "scope", (D(RL("S83.511A", "S83.512A"), "sprain of the anterior cruciate ligament", "ACL tear"),), lat="side"),
    Proc("Orthopedics", "29827", "Arthroscopic rotator cuff repair", "arthroscopic rotator cuff repair",
         "scope RCR", "scope", _RC, lat="side", comp=("29828",),
         up={"M75.111": D(RL("M75.121", "M75.122"), "complete nontraumatic rotator cuff tear", "full-thickness RCT")},
         step="The supraspinatus tear was mobilized and repaired to the footprint with two double-loaded suture anchors.",
         tstep="SS tear mobilized, 2 anchors"),
    Proc("Orthopedics", "29828", "Arthroscopic biceps tenodesis", "arthroscopic biceps tenodesis",
         "scope biceps tenodesis", "scope", (D(RL("M75.21", "M75.22"), "bicipital tendinitis", "biceps tendinitis"),), lat="side"),
    Proc("Orthopedics", "29806", "Arthroscopic shoulder stabilization", "arthroscopic Bankart repair (capsulorrhaphy)",
         "scope Bankart", "scope", (D(RL("M24.411", "M24.412"), "recurrent dislocation of the shoulder", "recurrent shoulder instability"),), lat="side"),
    Proc("Orthopedics", "27447", "Total knee replacement", "total knee arthroplasty", "TKA", "open", _KOA, lat="side", bilat=True,
         step="The distal femoral and proximal tibial cuts were made with cutting guides, and cemented components were implanted.",
         tstep="fem/tib cuts, cemented comps"),
    Proc("Orthopedics", "27130", "Total hip replacement", "total hip arthroplasty", "THA", "open", _HOA, lat="side"),
    Proc("Orthopedics", "27236", "Hip fracture treated with partial hip replacement", "hemiarthroplasty for femoral neck fracture",
         "hemi for FNF", "open", (D(RL("S72.001A", "S72.002A"), "fracture of the femoral neck", "FNF"),
                                  D(RL("S72.031A", "S72.032A"), "displaced midcervical femoral neck fracture", "displaced midcervical FNF")), lat="side"),
    Proc("Orthopedics", "27245", "Intertrochanteric fracture fixed with a nail", "intramedullary nailing of intertrochanteric femur fracture",
         "IMN IT fx", "open", (D(RL("S72.141A", "S72.142A"), "displaced intertrochanteric femur fracture", "IT fx"),), lat="side"),
    Proc("Orthopedics", "25607", "Open fixation of distal radius fracture, extra-articular", "open reduction internal fixation of extra-articular distal radius fracture",
         "ORIF DRF (extra-artic)", "open", (D(RL("S52.531A", "S52.532A"), "Colles fracture of the radius", "Colles fx"),), lat="side"),
    Proc("Orthopedics", "25609", "Open fixation of distal radius fracture, intra-articular, 3+ pieces", "open reduction internal fixation of comminuted intra-articular distal radius fracture",
         "ORIF DRF (intra-artic, 3+ frags)", "open", (D(RL("S52.571A", "S52.572A"), "intra-articular fracture of the lower radius", "intra-artic DRF"),), lat="side"),
    Proc("Orthopedics", "27814", "Open fixation of bimalleolar ankle fracture", "open reduction internal fixation of bimalleolar ankle fracture",
         "ORIF bimal ankle fx", "open", (D(RL("S82.841A", "S82.842A"), "displaced bimalleolar fracture", "bimal fx"),), lat="side"),
    Proc("Orthopedics", "27792", "Open fixation of distal fibula fracture", "open reduction internal fixation of lateral malleolus fracture",
         "ORIF lat mal", "open", (D(RL("S82.61XA", "S82.62XA"), "displaced fracture of the lateral malleolus", "lat mal fx"),), lat="side"),
    Proc("Orthopedics", "64721", "Carpal tunnel release", "open carpal tunnel release",
         "open CTR", "open", (D(RL("G56.01", "G56.02", "G56.03"), "carpal tunnel syndrome", "CTS"),), lat="side", bilat=True, comp=("26055",),
         step="The transverse carpal ligament was divided completely under direct vision, protecting the median nerve.",
         tstep="TCL released, median n. protected"),
    Proc("Orthopedics", "29848", "Endoscopic carpal tunnel release", "endoscopic carpal tunnel release",
         "endo CTR", "scope", (D(RL("G56.01", "G56.02"), "carpal tunnel syndrome", "CTS"),), lat="side"),
    Proc("Orthopedics", "26055", "Trigger finger release", "release of the A1 pulley (trigger digit release)",
         "A1 pulley release", "open", (_TRIG,), lat="finger"),
    Proc("Orthopedics", "25111", "Removal of wrist ganglion", "excision of dorsal wrist ganglion",
         "dorsal wrist ganglion exc", "open", (D(RL("M67.431", "M67.432"), "ganglion of the wrist", "wrist ganglion"),), lat="side"),
    Proc("Orthopedics", "23472", "Total shoulder replacement", "total shoulder arthroplasty",
         "TSA", "open", (D(RL("M19.011", "M19.012"), "primary osteoarthritis of the shoulder", "shoulder OA"),
                         D(RL("M12.811", "M12.812"), "rotator cuff arthropathy", "cuff arthropathy")), lat="side"),
    Proc("Orthopedics", "23412", "Open repair of chronic rotator cuff tear", "open repair of chronic rotator cuff tear",
         "open RCR (chronic)", "open", _RC[:2], lat="side"),
    Proc("Orthopedics", "20680", "Removal of deep hardware", "removal of deep orthopedic hardware",
         "ROH", "open", (D("T84.84XA", "pain due to internal orthopedic hardware", "painful hardware"),), lat="side"),
    Proc("Orthopedics", "27570", "Knee manipulation under anesthesia", "manipulation of the knee under anesthesia",
         "knee MUA", "closed", (D(RL("M24.661", "M24.662"), "ankylosis (arthrofibrosis) of the knee", "arthrofibrosis"),), lat="side"),
    Proc("Orthopedics", "64718", "Ulnar nerve transposition at the elbow", "anterior transposition of the ulnar nerve at the elbow",
         "UNT", "open", (D(RL("G56.21", "G56.22"), "lesion of the ulnar nerve (cubital tunnel syndrome)", "cubital tunnel"),), lat="side"),
    Proc("Orthopedics", "26160", "Removal of a tendon sheath mass of a finger", "excision of tendon sheath mass of the digit",
         "digit tendon sheath mass exc", "open", (D({**{f"R{d}": "D21.11" for d in range(1, 6)}, **{f"L{d}": "D21.12" for d in range(1, 6)}},
                                                   "benign neoplasm (giant cell tumor) of the tendon sheath", "GCTTS"),), lat="finger"),
]

# ------------------------------------------------------------------ general surgery
GENERAL = [
    Proc("General Surgery", "47562", "Laparoscopic gallbladder removal", "laparoscopic cholecystectomy", "lap chole", "lap",
         (D("K80.20", "symptomatic cholelithiasis", "sx cholelithiasis"), D("K81.1", "chronic cholecystitis", "chronic chole"),
          D("K80.10", "chronic cholecystitis with cholelithiasis", "chronic calc chole"), D("K82.8", "biliary dyskinesia", "biliary dyskinesia")),
         up={"K80.20": D("K80.00", "acute cholecystitis with cholelithiasis", "acute calc chole"),
             "K81.1": D("K80.10", "chronic cholecystitis with cholelithiasis", "chronic calc chole")},
         comp=("49591",),
         step="The critical view of safety was obtained, and the cystic duct and artery were clipped and divided before the gallbladder was taken off the liver bed.",
         tstep="CVS obtained, cystic duct/artery clipped + divided, GB off liver bed"),
    Proc("General Surgery", "47563", "Laparoscopic gallbladder removal with cholangiogram", "laparoscopic cholecystectomy with intraoperative cholangiogram",
         "lap chole w/ IOC", "lap", (D("K80.50", "choledocholithiasis without cholangitis", "CBD stone"),
                                      D("K80.20", "symptomatic cholelithiasis", "sx cholelithiasis")), comp=("49591",)),
    Proc("General Surgery", "44970", "Laparoscopic appendix removal", "laparoscopic appendectomy", "lap appy", "lap",
         (D("K35.80", "acute appendicitis", "acute appy"), D("K35.30", "acute appendicitis with localized peritonitis", "appy w/ local peritonitis")),
         up={"K35.80": D("K35.32", "perforated acute appendicitis with localized peritonitis", "perf appy w/ local peritonitis"),
             "K35.30": D("K35.33", "perforated appendicitis with localized peritonitis and abscess", "perf appy w/ abscess")},
         step="The mesoappendix was divided with an energy device and the base of the appendix was stapled across.",
         tstep="mesoappendix taken w/ LigaSure, base stapled"),
    Proc("General Surgery", "44950", "Open appendix removal", "open appendectomy", "open appy", "open",
         (D("K35.80", "acute appendicitis", "acute appy"),), up={"K35.80": D("K35.210", "acute appendicitis with generalized peritonitis and abscess, not perforated", "appy w/ gen peritonitis + abscess, no perf")}),
    Proc("General Surgery", "49650", "Laparoscopic inguinal hernia repair", "laparoscopic inguinal hernia repair with mesh", "lap IHR w/ mesh", "lap",
         (D(RL("K40.90", "K40.90", "K40.20"), "inguinal hernia without obstruction or gangrene", "inguinal hernia"),), lat="side", bilat=True),
    Proc("General Surgery", "49505", "Open inguinal hernia repair, reducible", "open inguinal hernia repair with mesh (Lichtenstein)", "open IHR (Lichtenstein)", "open",
         (D("K40.90", "inguinal hernia without obstruction or gangrene", "inguinal hernia"),
          D("K40.91", "recurrent inguinal hernia without obstruction", "recurrent inguinal hernia")), lat="side",
         up={"K40.90": D("K40.30", "inguinal hernia with obstruction, without gangrene", "incarcerated inguinal hernia")}),
    Proc("General Surgery", "49591", "Abdominal wall hernia repair, first time, under 3 cm, reducible", "primary umbilical hernia repair", "umb hernia repair", "open",
         (D("K42.9", "reducible umbilical hernia", "umb hernia"),)),
    Proc("General Surgery", "49593", "Abdominal wall hernia repair, first time, 3-10 cm, reducible", "ventral hernia repair with mesh, defect 3 to 10 cm", "VHR w/ mesh (3-10 cm)", "open",
         (D("K43.9", "reducible ventral hernia", "ventral hernia"), D("K43.2", "incisional hernia without obstruction", "incisional hernia"))),
    Proc("General Surgery", "19301", "Partial mastectomy", "partial mastectomy (lumpectomy) with wire localization", "WL lumpectomy", "open",
         (D(RL("C50.411", "C50.412"), "malignant neoplasm of the upper-outer quadrant of the breast", "UOQ breast ca"),
          D(RL("D05.11", "D05.12"), "ductal carcinoma in situ of the breast", "DCIS")), lat="side", comp=("38525",)),
    Proc("General Surgery", "38525", "Removal of deep axillary lymph nodes", "sentinel lymph node excision, axillary", "axillary SLNB", "open",
         (D(RL("C50.411", "C50.412"), "malignant neoplasm of the upper-outer quadrant of the breast", "UOQ breast ca"),), lat="side"),
    Proc("General Surgery", "19303", "Simple mastectomy", "total (simple) mastectomy", "simple mastectomy", "open",
         (D(RL("C50.911", "C50.912"), "malignant neoplasm of the breast", "breast ca"),
          D(RL("Z40.01", "Z40.01"), "prophylactic removal of breast for genetic susceptibility", "prophylactic (BRCA)")), lat="side", bilat=True),
    Proc("General Surgery", "44204", "Laparoscopic partial colectomy with anastomosis", "laparoscopic sigmoid colectomy with primary anastomosis", "lap sigmoid colectomy", "lap",
         (D("K57.32", "diverticulitis of the large intestine without perforation or abscess", "sigmoid diverticulitis"),
          D("C18.7", "malignant neoplasm of the sigmoid colon", "sigmoid ca")),
         up={"K57.32": D("K57.20", "diverticulitis of the large intestine with perforation and abscess", "perf diverticulitis w/ abscess")}),
    Proc("General Surgery", "44205", "Laparoscopic right colectomy", "laparoscopic right hemicolectomy with ileocolic anastomosis", "lap R hemicolectomy", "lap",
         (D("C18.2", "malignant neoplasm of the ascending colon", "ascending colon ca"), D("D12.0", "benign neoplasm of the cecum", "cecal polyp (not endoscopically resectable)"))),
    Proc("General Surgery", "44140", "Open partial colectomy with anastomosis", "open partial colectomy with anastomosis", "open partial colectomy", "open",
         (D("C18.4", "malignant neoplasm of the transverse colon", "transverse colon ca"), D("K56.609", "intestinal obstruction", "SBO/LBO"))),
    Proc("General Surgery", "44120", "Small bowel resection, single segment", "small bowel resection with primary anastomosis", "SBR w/ anastomosis", "open",
         (D("K56.50", "intestinal adhesions with obstruction", "adhesive SBO"), D("K50.00", "Crohn disease of the small intestine", "SB Crohn's"))),
    Proc("General Surgery", "43775", "Laparoscopic sleeve gastrectomy", "laparoscopic sleeve gastrectomy", "lap sleeve", "lap",
         (D("E66.01", "morbid obesity due to excess calories", "morbid obesity"),)),
    Proc("General Surgery", "43644", "Laparoscopic gastric bypass", "laparoscopic Roux-en-Y gastric bypass", "lap RYGB", "lap",
         (D("E66.01", "morbid obesity due to excess calories", "morbid obesity"),)),
    Proc("General Surgery", "60240", "Total thyroid removal", "total thyroidectomy", "TT", "open",
         (D("E04.2", "nontoxic multinodular goiter", "MNG"), D("C73", "malignant neoplasm of the thyroid gland", "thyroid ca"),
          D("E05.00", "Graves disease without thyrotoxic crisis", "Graves"))),
    Proc("General Surgery", "60220", "Thyroid lobe removal", "thyroid lobectomy with isthmusectomy", "thyroid lobectomy", "open",
         (D("E04.1", "nontoxic single thyroid nodule", "thyroid nodule"),), lat="side",
         up={"E04.1": D("C73", "malignant neoplasm of the thyroid gland", "thyroid ca")}),
    Proc("General Surgery", "46260", "Hemorrhoid removal, two or more columns", "excisional hemorrhoidectomy of two or more columns", "hemorrhoidectomy x2+ columns", "anal",
         (D("K64.2", "third degree hemorrhoids", "grade III hemorrhoids"), D("K64.3", "fourth degree hemorrhoids", "grade IV hemorrhoids"))),
    Proc("General Surgery", "46255", "Hemorrhoid removal, single column", "excisional hemorrhoidectomy of a single column", "hemorrhoidectomy x1 column", "anal",
         (D("K64.2", "third degree hemorrhoids", "grade III hemorrhoids"), D("K64.5", "perianal venous thrombosis", "thrombosed ext hemorrhoid"))),
    Proc("General Surgery", "11406", "Removal of benign skin lesion of trunk or limbs, over 4 cm", "excision of large subcutaneous mass of the back", "exc back mass > 4 cm", "skin",
         (D("D17.1", "benign lipomatous neoplasm of the trunk skin and subcutis", "lipoma trunk"), D("L72.3", "sebaceous cyst", "sebaceous cyst"))),
    Proc("General Surgery", "10060", "Drainage of a simple skin abscess", "incision and drainage of abscess", "I&D abscess", "skin",
         (D("L02.212", "cutaneous abscess of the back", "back abscess"), D("L02.416", "cutaneous abscess of the left lower limb", "LLE abscess"),
          D("L02.415", "cutaneous abscess of the right lower limb", "RLE abscess"))),
    Proc("General Surgery", "49320", "Diagnostic laparoscopy", "diagnostic laparoscopy", "dx lap", "lap",
         (D("R10.31", "right lower quadrant abdominal pain", "RLQ pain"), D("R10.32", "left lower quadrant abdominal pain", "LLQ pain"))),
    Proc("General Surgery", "36561", "Insertion of tunneled central venous port", "placement of a tunneled central venous port", "port placement", "open",
         (D("C18.7", "malignant neoplasm of the sigmoid colon", "sigmoid ca"), D("C34.11", "malignant neoplasm of the right upper lobe bronchus or lung", "RUL lung ca"),
          D("C50.912", "malignant neoplasm of the left breast", "L breast ca"))),
    Proc("General Surgery", "13160", "Secondary closure of a wound dehiscence, complicated", "secondary closure of a dehisced surgical wound", "2ndary closure of dehisced wound", "open",
         (D("T81.31XA", "disruption of an external surgical wound", "wound dehiscence"),)),
    Proc("General Surgery", "10140", "Drainage of a hematoma", "evacuation of a postoperative hematoma", "hematoma evac", "open",
         (D("L76.32", "postprocedural hematoma of skin and subcutaneous tissue", "post-op hematoma"),)),
    Proc("General Surgery", "11403", "Removal of benign skin lesion of trunk or limbs, 2.1-3.0 cm", "excision of benign skin lesion, 2.1 to 3.0 cm", "exc benign lesion 2.1-3 cm", "skin",
         (D("D23.5", "benign neoplasm of the skin of the trunk", "benign skin lesion trunk"), D("L82.1", "seborrheic keratosis", "SK"))),
    Proc("General Surgery", "11102", "Tangential skin biopsy, single lesion", "shave biopsy of a skin lesion", "shave bx", "skin",
         (D("D48.5", "neoplasm of uncertain behavior of the skin", "skin lesion, unc behavior"), D("L57.0", "actinic keratosis", "AK"))),
]

# ------------------------------------------------------------------ urology
_BLAD = (D("C67.2", "malignant neoplasm of the lateral wall of the bladder", "bladder ca, lat wall"),
         D("C67.4", "malignant neoplasm of the posterior wall of the bladder", "bladder ca, post wall"),
         D("D41.4", "neoplasm of uncertain behavior of the bladder", "bladder tumor"))
_STONE = (D("N20.1", "calculus of the ureter", "ureteral stone"), D("N20.0", "calculus of the kidney", "renal stone"),
          D("N13.2", "obstructing stone with hydronephrosis", "obstructing stone w/ hydro"))
UROLOGY = [
    Proc("Urology", "52000", "Cystoscopy", "cystourethroscopy", "cysto", "cysto",
         (D("R31.0", "gross hematuria", "gross hematuria"), D("R31.21", "microscopic hematuria without symptoms", "asx micro hematuria"))),
    Proc("Urology", "52234", "Bladder tumor resection, small", "transurethral resection of a small bladder tumor (0.5 to 2 cm)", "TURBT small", "cysto", _BLAD),
    Proc("Urology", "52235", "Bladder tumor resection, medium", "transurethral resection of a medium bladder tumor (2 to 5 cm)", "TURBT medium", "cysto", _BLAD),
    Proc("Urology", "52240", "Bladder tumor resection, large", "transurethral resection of a large bladder tumor (over 5 cm)", "TURBT large", "cysto", _BLAD),
    Proc("Urology", "52601", "Transurethral prostate resection", "transurethral resection of the prostate", "TURP", "cysto",
         (D("N40.1", "benign prostatic enlargement causing lower urinary tract symptoms", "BPH w/ LUTS"),)),
    Proc("Urology", "52356", "Ureteroscopy with laser stone fragmentation and stent", "ureteroscopy with laser lithotripsy and ureteral stent placement", "URS/LL/stent", "cysto",
         _STONE, lat="side",
         step="The stone was fragmented with the holmium laser and the fragments were basketed, after which a double-J stent was left in place.",
         tstep="Ho:YAG lithotripsy, frags basketed, JJ stent"),
    Proc("Urology", "52332", "Cystoscopy with ureteral stent insertion", "cystoscopy with ureteral stent placement", "cysto/stent", "cysto", _STONE, lat="side"),
    Proc("Urology", "50590", "Shock wave lithotripsy of kidney stone", "extracorporeal shock wave lithotripsy", "ESWL", "closed", _STONE[1:2], lat="side"),
    Proc("Urology", "55866", "Laparoscopic radical prostatectomy", "robotic-assisted laparoscopic radical prostatectomy", "RALP", "lap",
         (D("C61", "malignant neoplasm of the prostate", "prostate ca"),)),
    Proc("Urology", "55250", "Vasectomy", "bilateral vasectomy", "vasectomy", "open", (D("Z30.2", "encounter for sterilization", "elective sterilization"),)),
    Proc("Urology", "54161", "Circumcision, after the newborn period", "circumcision by surgical excision", "circ", "open",
         (D("N47.1", "phimosis", "phimosis"), D("N48.1", "balanoposthitis", "balanoposthitis"))),
    Proc("Urology", "55040", "Hydrocele removal, one side", "excision of hydrocele", "hydrocelectomy", "open",
         (D("N43.3", "hydrocele", "hydrocele"),), lat="side"),
    Proc("Urology", "50543", "Laparoscopic partial kidney removal", "robotic-assisted laparoscopic partial nephrectomy", "RAPN", "lap",
         (D(RL("C64.1", "C64.2"), "malignant neoplasm of the kidney", "RCC"),), lat="side"),
    Proc("Urology", "57288", "Sling operation for stress incontinence", "midurethral sling placement", "MUS", "vaginal",
         (D("N39.3", "stress urinary incontinence", "SUI"),)),
]

# ------------------------------------------------------------------ otolaryngology
_TONS = (D("J35.01", "chronic tonsillitis", "chronic tonsillitis"), D("J35.03", "chronic infection of the tonsils and adenoids", "chronic T&A-itis"),
         D("G47.33", "obstructive sleep apnea", "OSA"), D("J35.1", "hypertrophy of the tonsils", "tonsillar hypertrophy"))
OTOLARYNGOLOGY = [
    Proc("Otolaryngology", "42826", "Tonsil removal, age 12 or over", "tonsillectomy", "T's", "oral", _TONS),
    Proc("Otolaryngology", "42821", "Tonsil and adenoid removal, age 12 or over", "tonsillectomy and adenoidectomy", "T&A", "oral", _TONS),
    Proc("Otolaryngology", "42820", "Tonsil and adenoid removal, under age 12", "tonsillectomy and adenoidectomy in a child", "T&A (peds)", "oral", _TONS,
         comp=("69436",)),
    Proc("Otolaryngology", "42830", "Adenoid removal, under age 12", "adenoidectomy in a child", "adenoidectomy (peds)", "oral",
         (D("J35.2", "hypertrophy of the adenoids", "adenoid hypertrophy"),)),
    Proc("Otolaryngology", "69436", "Ear tube placement under general anesthesia", "myringotomy with tympanostomy tube insertion", "BMT / PE tubes", "ear",
         (D(RL("H65.21", "H65.22", "H65.23"), "chronic serous otitis media", "chronic OME"),
          D(RL("H66.91", "H66.92", "H66.93"), "otitis media, recurrent", "recurrent AOM")), lat="side", bilat=True),
    Proc("Otolaryngology", "30520", "Septoplasty", "septoplasty", "septo", "nasal",
         (D("J34.2", "deviated nasal septum", "DNS"),), comp=("30140",)),
    Proc("Otolaryngology", "30140", "Submucous resection of inferior turbinate", "submucous resection of the inferior turbinates", "SMR ITs", "nasal",
         (D("J34.3", "hypertrophy of the nasal turbinates", "ITH"),)),
    Proc("Otolaryngology", "31255", "Endoscopic total ethmoidectomy", "endoscopic total ethmoidectomy", "FESS: total ethmoid", "nasal",
         (D("J32.2", "chronic ethmoidal sinusitis", "CRS ethmoid"), D("J32.4", "chronic pansinusitis", "chronic pansinusitis"),
          D("J33.8", "nasal polyps (other polyp of sinus)", "sinonasal polyps")), lat="side", comp=("31267",)),
    Proc("Otolaryngology", "31267", "Endoscopic maxillary antrostomy with tissue removal", "endoscopic maxillary antrostomy with removal of tissue", "FESS: MMA w/ tissue removal", "nasal",
         (D("J32.0", "chronic maxillary sinusitis", "CRS maxillary"),), lat="side"),
    Proc("Otolaryngology", "31287", "Endoscopic sphenoidotomy", "endoscopic sphenoidotomy", "FESS: sphenoidotomy", "nasal",
         (D("J32.3", "chronic sphenoidal sinusitis", "CRS sphenoid"),), lat="side"),
    Proc("Otolaryngology", "69631", "Tympanoplasty without mastoidectomy", "tympanoplasty with fascia graft", "TPL w/ fascia", "ear",
         (D(RL("H72.01", "H72.02"), "central perforation of the tympanic membrane", "central TM perf"),), lat="side"),
    Proc("Otolaryngology", "69930", "Cochlear implant", "cochlear implantation", "CI", "ear",
         (D("H90.3", "bilateral sensorineural hearing loss", "bilat SNHL"),), lat="side"),
    Proc("Otolaryngology", "31535", "Direct laryngoscopy with biopsy", "operative direct laryngoscopy with biopsy", "DL w/ bx", "oral",
         (D("J38.1", "polyp of the vocal cord", "VC polyp"), D("D02.0", "carcinoma in situ of the larynx", "laryngeal CIS"), D("J38.3", "vocal cord lesion", "VC lesion"))),
    Proc("Otolaryngology", "42415", "Parotid removal with facial nerve dissection", "superficial parotidectomy with facial nerve dissection", "superficial parotidectomy w/ FN dissection", "open",
         (D("D11.0", "benign neoplasm of the parotid gland (pleomorphic adenoma)", "pleomorphic adenoma"),), lat="side"),
    Proc("Otolaryngology", "60500", "Parathyroid exploration and removal", "parathyroidectomy", "parathyroid exploration/excision", "open",
         (D("E21.0", "primary hyperparathyroidism", "1' HPT"),)),
]

# ------------------------------------------------------------------ gynecology
GYNECOLOGY = [
    Proc("Gynecology", "58571", "Laparoscopic total hysterectomy, uterus up to 250 g, with tubes/ovaries", "total laparoscopic hysterectomy with bilateral salpingo-oophorectomy",
         "TLH/BSO", "lap", (D("D25.1", "intramural leiomyoma of the uterus", "intramural fibroids"), D("N80.03", "adenomyosis of the uterus", "adenomyosis"),
                            D("N92.0", "heavy, frequent but regular menstrual bleeding", "menorrhagia"))),
    Proc("Gynecology", "58570", "Laparoscopic total hysterectomy, uterus up to 250 g", "total laparoscopic hysterectomy", "TLH", "lap",
         (D("D25.1", "intramural leiomyoma of the uterus", "intramural fibroids"), D("N93.8", "abnormal uterine bleeding", "AUB"))),
    Proc("Gynecology", "58150", "Abdominal hysterectomy", "total abdominal hysterectomy", "TAH", "open",
         (D("D25.2", "subserosal leiomyoma of the uterus", "subserosal fibroid"), D("D25.1", "intramural leiomyoma of the uterus", "intramural fibroids"))),
    Proc("Gynecology", "58558", "Hysteroscopy with sampling or polyp removal", "hysteroscopy with polypectomy and endometrial sampling", "HSC/polypectomy", "hsc",
         (D("N84.0", "polyp of the corpus uteri", "endometrial polyp"), D("N95.0", "postmenopausal bleeding", "PMB"))),
    Proc("Gynecology", "58563", "Hysteroscopic endometrial ablation", "hysteroscopic endometrial ablation", "HSC EA", "hsc",
         (D("N92.0", "heavy, frequent but regular menstrual bleeding", "menorrhagia"),)),
    Proc("Gynecology", "58661", "Laparoscopic removal of tube and/or ovary", "laparoscopic salpingo-oophorectomy", "lap SO", "lap",
         (D(RL("N83.201", "N83.202"), "ovarian cyst", "ovarian cyst"), D(RL("D27.0", "D27.1"), "benign neoplasm of the ovary (dermoid)", "dermoid")), lat="side"),
    Proc("Gynecology", "58662", "Laparoscopic removal of pelvic lesions", "laparoscopic excision of endometriosis", "lap exc endo", "lap",
         (D("N80.30", "endometriosis of the pelvic peritoneum", "pelvic endo"), D("N80.101", "endometriosis of the right ovary", "R ovarian endo"),
          D("N80.102", "endometriosis of the left ovary", "L ovarian endo"))),
    Proc("Gynecology", "58670", "Laparoscopic tubal sterilization by fulguration", "laparoscopic tubal fulguration", "lap BTL (fulguration)", "lap",
         (D("Z30.2", "encounter for sterilization", "elective sterilization"),)),
    Proc("Gynecology", "57522", "Cervical conization by loop excision", "loop electrosurgical excision (cone) of the cervix", "LEEP cone", "vaginal",
         (D("N87.1", "moderate cervical dysplasia (CIN 2)", "CIN2"), D("D06.9", "carcinoma in situ of the cervix (CIN 3)", "CIN3"))),
    Proc("Gynecology", "58120", "Dilation and curettage, non-obstetric", "dilation and curettage", "D&C", "vaginal",
         (D("N93.9", "abnormal uterine bleeding", "AUB"), D("N85.00", "endometrial hyperplasia", "endometrial hyperplasia"))),
]

# ------------------------------------------------------------------ neurosurgery
NEUROSURGERY = [
    Proc("Neurosurgery", "63030", "Lumbar laminotomy with discectomy, one level", "lumbar hemilaminotomy and microdiscectomy", "L lumbar microdiscectomy", "spine",
         (D("M51.16", "lumbar disc disorder with radiculopathy", "lumbar HNP w/ radic"), D("M51.17", "lumbosacral disc disorder with radiculopathy", "L5-S1 HNP w/ radic"))),
    Proc("Neurosurgery", "63047", "Lumbar laminectomy for stenosis, one level", "lumbar decompressive laminectomy", "lumbar lami", "spine",
         (D("M48.062", "lumbar spinal stenosis with neurogenic claudication", "LSS w/ NC"), D("M48.061", "lumbar spinal stenosis without neurogenic claudication", "LSS"))),
    Proc("Neurosurgery", "22551", "Anterior cervical fusion with discectomy, one level", "anterior cervical discectomy and fusion", "ACDF x1", "spine",
         (D("M50.121", "cervical disc disorder at C4-C5 with radiculopathy", "C4-5 HNP w/ radic"), D("M50.122", "cervical disc disorder at C5-C6 with radiculopathy", "C5-6 HNP w/ radic"),
          D("M47.12", "cervical spondylosis with myelopathy", "cervical spondylotic myelopathy"))),
    Proc("Neurosurgery", "22633", "Lumbar fusion, posterior and interbody, one level", "posterior lumbar interbody fusion (TLIF), single level", "TLIF x1", "spine",
         (D("M43.16", "spondylolisthesis of the lumbar region", "lumbar spondylolisthesis"), D("M51.369", "lumbar disc degeneration", "lumbar DDD"))),
    Proc("Neurosurgery", "22612", "Posterolateral lumbar fusion, one level", "posterolateral lumbar fusion with instrumentation", "PLF x1", "spine",
         (D("M43.16", "spondylolisthesis of the lumbar region", "lumbar spondylolisthesis"),)),
    Proc("Neurosurgery", "61510", "Craniotomy for brain tumor above the tentorium", "craniotomy for resection of supratentorial tumor", "crani for tumor", "cranial",
         (D("C71.1", "malignant neoplasm of the frontal lobe", "frontal GBM"), D("D32.0", "benign neoplasm of the cerebral meninges", "meningioma"))),
    Proc("Neurosurgery", "62223", "Ventriculoperitoneal shunt", "ventriculoperitoneal shunt placement", "VPS", "cranial",
         (D("G91.2", "normal pressure hydrocephalus", "NPH"), D("G91.1", "obstructive hydrocephalus", "obstructive hydro"))),
    Proc("Neurosurgery", "63650", "Percutaneous spinal cord stimulator lead placement", "percutaneous placement of epidural spinal cord stimulator leads", "perc SCS leads", "spine",
         (D("M96.1", "postlaminectomy syndrome", "FBSS"), D("G90.521", "complex regional pain syndrome of the right lower limb", "CRPS RLE"))),
]

# ------------------------------------------------------------------ plastics
PLASTICS = [
    Proc("Plastic Surgery", "19318", "Breast reduction", "reduction mammaplasty", "reduction mammoplasty", "open",
         (D("N62", "hypertrophy of the breast", "macromastia"),), lat="side", bilat=True),
    Proc("Plastic Surgery", "15830", "Abdominal panniculectomy", "panniculectomy", "panni", "open",
         (D("L98.7", "redundant abdominal skin and fat (pannus)", "redundant pannus"),)),
    Proc("Plastic Surgery", "19357", "Breast reconstruction with tissue expander", "immediate breast reconstruction with tissue expander", "TE placement", "open",
         (D(RL("Z90.11", "Z90.12", "Z90.13"), "acquired absence of the breast", "s/p mastectomy"),), lat="side", bilat=True),
    Proc("Plastic Surgery", "19325", "Breast augmentation with implant", "breast augmentation with implant", "BBA w/ implants", "open",
         (D("N65.1", "asymmetry of the reconstructed breast", "breast asymmetry after recon"),), lat="side"),
    Proc("Plastic Surgery", "14040", "Adjacent tissue rearrangement of face, hands or feet, up to 10 sq cm", "adjacent tissue transfer (rotation flap) of the cheek", "rotation flap cheek", "skin",
         (D("C44.319", "basal cell carcinoma of the skin of the face", "BCC cheek"), D("C44.329", "squamous cell carcinoma of the skin of the face", "SCC cheek"))),
    Proc("Plastic Surgery", "15100", "Split-thickness skin graft, trunk or limbs, first 100 sq cm", "split-thickness skin graft", "STSG", "skin",
         (D("L89.154", "pressure ulcer of the sacral region, stage 4", "sacral PU stg 4"), D("T22.291A", "second degree burn of the right upper arm and shoulder", "2nd deg burn R arm"))),
    Proc("Plastic Surgery", "13132", "Complex repair of face, 2.6-7.5 cm", "complex layered repair of a facial laceration", "complex repair face", "skin",
         (D("S01.81XA", "laceration of the face without foreign body", "face lac"), D("S01.411A", "laceration of the right cheek", "R cheek lac"))),
    Proc("Plastic Surgery", "15823", "Upper eyelid skin removal for heavy hooding", "functional upper eyelid blepharoplasty", "upper bleph", "eyelid",
         (D({"RU": "H02.831", "LU": "H02.834"}, "dermatochalasis of the upper eyelid", "dermatochalasis"),), lat="eyelid", bilat=True),
]

# ------------------------------------------------------------------ smaller services
PAIN = [
    Proc("Pain Management", "64483", "Lumbar transforaminal epidural steroid injection, one level", "fluoroscopically guided lumbar transforaminal epidural steroid injection", "L TFESI", "needle",
         (D("M54.16", "radiculopathy of the lumbar region", "lumbar radic"), D("M54.17", "radiculopathy of the lumbosacral region", "LS radic")), lat="side", bilat=True),
    Proc("Pain Management", "62323", "Lumbar interlaminar epidural injection with imaging", "fluoroscopically guided lumbar interlaminar epidural steroid injection", "L ILESI", "needle",
         (D("M48.062", "lumbar spinal stenosis with neurogenic claudication", "LSS w/ NC"),)),
    Proc("Pain Management", "64493", "Lumbar facet joint injection, one level", "lumbar facet joint injection", "L facet inj", "needle",
         (D("M47.816", "lumbar spondylosis without myelopathy or radiculopathy", "lumbar facet arthropathy"),), lat="side", bilat=True),
    Proc("Pain Management", "64635", "Radiofrequency ablation of lumbar facet nerves, one level", "radiofrequency ablation of the lumbar medial branch nerves", "L MBB RFA", "needle",
         (D("M47.816", "lumbar spondylosis without myelopathy or radiculopathy", "lumbar facet arthropathy"),), lat="side", bilat=True),
    Proc("Pain Management", "64490", "Cervical facet joint injection, one level", "cervical facet joint injection", "C facet inj", "needle",
         (D("M47.812", "cervical spondylosis without myelopathy or radiculopathy", "cervical facet arthropathy"),), lat="side"),
]
CARDIOTHORACIC = [
    Proc("Cardiothoracic Surgery", "33533", "Coronary bypass with one arterial graft", "coronary artery bypass grafting using the left internal mammary artery", "CABG x1 (LIMA-LAD)", "chest",
         (D("I25.10", "coronary artery disease of the native vessels", "CAD"), D("I25.110", "coronary artery disease with unstable angina", "CAD w/ UA"))),
    Proc("Cardiothoracic Surgery", "33405", "Aortic valve replacement with prosthesis", "aortic valve replacement with bioprosthetic valve", "AVR (tissue)", "chest",
         (D("I35.0", "nonrheumatic aortic valve stenosis", "AS"), D("I35.2", "aortic stenosis with insufficiency", "AS/AI"))),
    Proc("Cardiothoracic Surgery", "32663", "Thoracoscopic lobectomy", "video-assisted thoracoscopic lobectomy", "VATS lobectomy", "chest",
         (D("C34.11", "malignant neoplasm of the right upper lobe bronchus or lung", "RUL NSCLC"), D("C34.12", "malignant neoplasm of the left upper lobe bronchus or lung", "LUL NSCLC"),
          D("C34.31", "malignant neoplasm of the right lower lobe bronchus or lung", "RLL NSCLC"))),
    Proc("Cardiothoracic Surgery", "32551", "Chest tube insertion", "tube thoracostomy", "chest tube", "chest",
         (D("J93.11", "primary spontaneous pneumothorax", "PSP"), D("J90", "pleural effusion", "pleural effusion")), lat="side"),
    Proc("Cardiothoracic Surgery", "32650", "Thoracoscopic pleurodesis", "video-assisted thoracoscopic mechanical pleurodesis", "VATS pleurodesis", "chest",
         (D("J93.11", "primary spontaneous pneumothorax", "PSP"), D("J91.0", "malignant pleural effusion", "MPE")), lat="side"),
]
DERMATOLOGY = [
    Proc("Dermatology", "17311", "Mohs surgery, head or neck, first stage", "Mohs micrographic surgery, first stage", "Mohs stage 1", "skin",
         (D("C44.311", "basal cell carcinoma of the skin of the nose", "BCC nose"), D("C44.321", "squamous cell carcinoma of the skin of the nose", "SCC nose"),
          D("C44.01", "basal cell carcinoma of the skin of the lip", "BCC lip"))),
    Proc("Dermatology", "11642", "Removal of skin cancer of face, 1.1-2.0 cm", "excision of a malignant lesion of the face, 1.1 to 2.0 cm", "exc malig lesion face 1.1-2 cm", "skin",
         (D("C44.319", "basal cell carcinoma of the skin of the face", "BCC face"), D("D03.39", "melanoma in situ of the face", "MIS face"))),
    Proc("Dermatology", "11602", "Removal of skin cancer of trunk or limbs, 1.1-2.0 cm", "excision of a malignant lesion of the trunk, 1.1 to 2.0 cm", "exc malig lesion trunk 1.1-2 cm", "skin",
         (D("C44.519", "basal cell carcinoma of the skin of the trunk", "BCC trunk"), D("C43.59", "malignant melanoma of the trunk", "melanoma trunk"))),
    Proc("Dermatology", "17000", "Destruction of premalignant lesion, first", "cryodestruction of an actinic keratosis", "LN2 AK x1", "skin",
         (D("L57.0", "actinic keratosis", "AK"),)),
]
GASTRO = [
    Proc("Gastroenterology", "45380", "Colonoscopy with biopsy", "colonoscopy with cold forceps biopsy", "colo w/ bx", "endo",
         (D("K51.30", "ulcerative rectosigmoiditis", "UC rectosigmoid"), D("K52.9", "noninfective colitis", "colitis"))),
    Proc("Gastroenterology", "45385", "Colonoscopy with snare polyp removal", "colonoscopy with snare polypectomy", "colo w/ snare polypectomy", "endo",
         (D("K63.5", "polyp of the colon", "colon polyp"), D("D12.5", "benign neoplasm of the sigmoid colon", "sigmoid adenoma"))),
    Proc("Gastroenterology", "45378", "Diagnostic colonoscopy", "diagnostic colonoscopy", "dx colo", "endo",
         (D("Z12.11", "screening for malignant neoplasm of the colon", "screening"), D("K92.1", "melena", "melena"))),
    Proc("Gastroenterology", "43239", "Upper endoscopy with biopsy", "esophagogastroduodenoscopy with biopsy", "EGD w/ bx", "endo",
         (D("K21.9", "reflux disease without esophagitis", "GERD"), D("K22.70", "Barrett esophagus without dysplasia", "Barrett's"),
          D("K29.70", "gastritis without bleeding", "gastritis"))),
    Proc("Gastroenterology", "43264", "ERCP with stone removal", "endoscopic retrograde cholangiopancreatography with removal of common duct stones", "ERCP w/ stone extraction", "endo",
         (D("K80.50", "choledocholithiasis without cholangitis", "CBD stone"), D("K80.30", "choledocholithiasis with cholangitis", "CBD stone w/ cholangitis"))),
    Proc("Gastroenterology", "43246", "Endoscopic feeding tube placement", "percutaneous endoscopic gastrostomy tube placement", "PEG", "endo",
         (D("R13.10", "dysphagia", "dysphagia"), D("I69.391", "swallowing difficulty after a stroke", "post-CVA dysphagia"))),
]
OBSTETRICS = [
    Proc("Obstetrics", "59514", "Cesarean delivery only", "low transverse cesarean delivery", "LTCS", "open",
         (D("O34.211", "prior low transverse cesarean scar", "prior LTCS"),
          D("O32.1XX0", "maternal care for breech presentation", "breech"), D("O62.1", "secondary uterine inertia (arrest of dilation)", "arrest of dilation"))),
    Proc("Obstetrics", "59320", "Cervical cerclage during pregnancy", "transvaginal cervical cerclage (McDonald)", "McDonald cerclage", "vaginal",
         (D("O34.32", "cervical insufficiency in the second trimester", "cervical insufficiency 2nd tri"),)),
    Proc("Obstetrics", "59820", "Surgical completion of missed miscarriage, first trimester", "suction dilation and evacuation for missed abortion", "suction D&E (missed ab)", "vaginal",
         (D("O02.1", "missed abortion", "missed ab"),)),
    Proc("Obstetrics", "59160", "Postpartum uterine curettage", "postpartum curettage", "postpartum D&C", "vaginal",
         (D("O72.2", "delayed postpartum hemorrhage", "delayed PPH"),)),
]
_HALLUX = D(RL("M20.11", "M20.12"), "hallux valgus (bunion)", "HAV")
PODIATRY = [
    Proc("Podiatry", "28296", "Bunion correction with metatarsal osteotomy", "bunionectomy with distal first metatarsal osteotomy (Austin)", "Austin bunionectomy", "open",
         (_HALLUX,), lat="side"),
    Proc("Podiatry", "28285", "Hammertoe correction", "hammertoe correction by proximal interphalangeal joint arthroplasty", "HT correction (PIPJ arthroplasty)", "open",
         (D(RL("M20.41", "M20.42"), "hammer toe", "HT"),), lat="toe"),
    Proc("Podiatry", "11750", "Permanent toenail removal with matrix", "total nail avulsion with matrixectomy", "TNA w/ matrixectomy", "skin",
         (D("L60.0", "ingrowing nail", "ingrown nail"),), lat="toe"),
    Proc("Podiatry", "28060", "Partial plantar fascia excision", "partial plantar fasciectomy", "partial PF excision", "open",
         (D("M72.2", "plantar fascial fibromatosis (plantar fasciitis)", "plantar fasciitis"),), lat="side"),
    Proc("Podiatry", "28820", "Toe amputation at the metatarsophalangeal joint", "amputation of toe at the metatarsophalangeal joint", "toe amp at MTPJ", "open",
         (D(RL("E11.621", "E11.621"), "type 2 diabetes with foot ulcer", "DM2 foot ulcer"),
          D(RL("M86.171", "M86.172"), "acute osteomyelitis of the ankle and foot", "acute osteo foot")), lat="toe"),
]
PULMONARY = [
    Proc("Pulmonology", "31622", "Diagnostic bronchoscopy", "diagnostic flexible bronchoscopy", "dx bronch", "bronch",
         (D("R04.2", "hemoptysis", "hemoptysis"), D("R05.3", "chronic cough", "chronic cough"))),
    Proc("Pulmonology", "31624", "Bronchoscopy with lavage", "bronchoscopy with bronchoalveolar lavage", "bronch w/ BAL", "bronch",
         (D("J18.9", "pneumonia, organism unspecified", "PNA"), D("J84.9", "interstitial pulmonary disease", "ILD"))),
    Proc("Pulmonology", "31628", "Bronchoscopy with lung biopsy, one lobe", "bronchoscopy with transbronchial lung biopsy", "bronch w/ TBBx", "bronch",
         (D("R91.1", "solitary pulmonary nodule", "SPN"), D("D86.0", "sarcoidosis of the lung", "pulm sarcoid"))),
    Proc("Pulmonology", "31652", "Endobronchial ultrasound needle sampling, 1-2 stations", "endobronchial ultrasound-guided transbronchial needle aspiration", "EBUS-TBNA", "bronch",
         (D("R59.0", "localized enlarged lymph nodes (mediastinal)", "mediastinal LAD"), D("C34.90", "malignant neoplasm of the lung", "lung ca"))),
    Proc("Pulmonology", "32555", "Thoracentesis with imaging", "ultrasound-guided thoracentesis", "US-guided thora", "needle",
         (D("J90", "pleural effusion", "pleural effusion"), D("J91.0", "malignant pleural effusion", "MPE")), lat="side"),
]
PEDIATRIC = [
    Proc("Pediatric Surgery", "49500", "Inguinal hernia repair, child 6 months to under 5 years", "pediatric inguinal herniorrhaphy (high ligation)", "peds IHR", "open",
         (D("K40.90", "inguinal hernia without obstruction or gangrene", "inguinal hernia"),), lat="side", bilat=True),
    Proc("Pediatric Surgery", "43520", "Pyloromyotomy", "pyloromyotomy", "pyloromyotomy (Ramstedt)", "open",
         (D("Q40.0", "infantile hypertrophic pyloric stenosis", "HPS"),)),
    Proc("Pediatric Surgery", "54640", "Orchiopexy through the groin", "inguinal orchiopexy", "orchiopexy via groin", "open",
         (D("Q53.111", "unilateral intra-abdominal undescended testis", "intra-abd UDT"), D("Q53.112", "unilateral undescended testis in the inguinal canal", "inguinal UDT")), lat="side"),
    Proc("Pediatric Surgery", "54150", "Circumcision with clamp and nerve block", "circumcision using a clamp with dorsal penile nerve block", "clamp circ w/ DPNB", "open",
         (D("N47.1", "phimosis", "phimosis"),)),
    Proc("Pediatric Surgery", "44970", "Laparoscopic appendix removal", "laparoscopic appendectomy", "lap appy", "lap",
         (D("K35.80", "acute appendicitis", "acute appy"),), up={"K35.80": D("K35.32", "perforated acute appendicitis with localized peritonitis", "perf appy w/ local peritonitis")}),
]

PROCEDURES: list[Proc] = (OPHTHALMOLOGY + ORTHOPEDICS + GENERAL + UROLOGY + OTOLARYNGOLOGY + GYNECOLOGY + NEUROSURGERY
                          + PLASTICS + PAIN + CARDIOTHORACIC + DERMATOLOGY + GASTRO + OBSTETRICS + PODIATRY + PULMONARY + PEDIATRIC)

BY_SERVICE: dict[str, list[Proc]] = {}
for _p in PROCEDURES:
    BY_SERVICE.setdefault(_p.service, []).append(_p)
BY_CPT: dict[str, Proc] = {}
for _p in PROCEDURES:
    BY_CPT.setdefault(_p.cpt, _p)

# Procedures that are themselves a return to the OR for a complication of an earlier operation
# (modifier 78 when the note says it is within that operation's global period).
RETURN_PROCS = ("13160", "10140")
# Separate-site lesion work added as a distinct procedure (59 separate incision, XS separate structure).
DISTINCT_PROCS = ("11403", "11102")


# ------------------------------------------------------------------ secondary diagnoses
@dataclass(frozen=True)
class Comorbid:
    codes: tuple  # all coded together
    words: str
    terse: str


COMORBIDITIES = [
    Comorbid(("E11.9",), "type 2 diabetes mellitus, diet controlled", "DM2 (diet)"),
    Comorbid(("E11.9", "Z79.84"), "type 2 diabetes mellitus on metformin", "DM2 on metformin"),
    Comorbid(("E11.9", "Z79.4"), "type 2 diabetes mellitus requiring insulin", "DM2 on insulin"),
    Comorbid(("E11.22", "N18.31"), "type 2 diabetes with diabetic chronic kidney disease, stage 3a", "DM2 w/ CKD 3a"),
    Comorbid(("E10.9",), "type 1 diabetes mellitus", "DM1"),
    Comorbid(("I10",), "essential hypertension", "HTN"),
    Comorbid(("E78.5",), "hyperlipidemia", "HLD"),
    Comorbid(("I48.91", "Z79.01"), "atrial fibrillation on apixaban", "afib on Eliquis"),
    Comorbid(("I48.20", "Z79.01"), "chronic atrial fibrillation on warfarin", "chronic AF on coumadin"),
    Comorbid(("Z86.718", "Z79.01"), "history of deep vein thrombosis, maintained on rivaroxaban", "hx DVT on Xarelto"),
    Comorbid(("I25.10", "Z79.82"), "coronary artery disease on daily aspirin", "CAD on ASA"),
    Comorbid(("Z95.5",), "coronary stents in place", "s/p PCI w/ stents"),
    Comorbid(("J44.9",), "chronic obstructive pulmonary disease", "COPD"),
    Comorbid(("J45.909",), "asthma", "asthma"),
    Comorbid(("G47.33",), "obstructive sleep apnea on CPAP", "OSA on CPAP"),
    Comorbid(("K21.9",), "gastroesophageal reflux disease", "GERD"),
    Comorbid(("E03.9",), "hypothyroidism on levothyroxine", "hypothyroid"),
    Comorbid(("F32.A",), "depression", "depression"),
    Comorbid(("F41.9",), "anxiety", "anxiety"),
    Comorbid(("N18.30",), "chronic kidney disease stage 3", "CKD 3"),
    Comorbid(("I50.32",), "chronic diastolic heart failure", "chronic HFpEF"),
    Comorbid(("D64.9",), "anemia", "anemia"),
    Comorbid(("M81.0",), "osteoporosis", "osteoporosis"),
    Comorbid(("Z79.52",), "long-term systemic steroid use", "chronic prednisone"),
    Comorbid(("Z88.0",), "penicillin allergy", "PCN allergy"),
    Comorbid(("Z92.21",), "history of antineoplastic chemotherapy", "hx chemo"),
    Comorbid(("E55.9",), "vitamin D deficiency", "vit D def"),
    Comorbid(("G40.909",), "epilepsy, well controlled", "seizure d/o"),
    Comorbid(("M06.9",), "rheumatoid arthritis", "RA"),
    Comorbid(("I73.9",), "peripheral vascular disease", "PVD"),
]

# Tobacco status: a coder codes current use and history of use differently; "never" codes nothing.
TOBACCO = [
    (("F17.210",), "She/He smokes cigarettes daily", "current smoker"),
    (("Z87.891",), "is a former smoker who quit", "former smoker"),
    ((), "has never used tobacco", "never smoker"),
]


def bmi_code(bmi: float) -> str:
    """Z68 BMI code for an adult BMI value."""
    if bmi < 30:
        return f"Z68.{int(bmi)}" if bmi >= 20 else "Z68.1"
    if bmi < 40:
        return f"Z68.{int(bmi)}"
    if bmi < 45:
        return "Z68.41"
    if bmi < 50:
        return "Z68.42"
    if bmi < 60:
        return "Z68.43"
    if bmi < 70:
        return "Z68.44"
    return "Z68.45"


def obesity_codes(bmi: float) -> tuple[str, ...]:
    """Obesity is coded only with a BMI of 30 or more: E66.01 (severe, >= 40) or E66.9, plus Z68."""
    if bmi >= 40:
        return ("E66.01", bmi_code(bmi))
    if bmi >= 30:
        return ("E66.9", bmi_code(bmi))
    return ()


def all_icd10_codes() -> set[str]:
    """Every ICD-10-CM code the generator can emit (the billable test walks this set)."""
    out: set[str] = set()

    def add(dx):
        out.update([dx.code] if isinstance(dx.code, str) else dx.code.values())

    for p in PROCEDURES:
        for dx in p.dx:
            add(dx)
        for dx in p.up.values():
            add(dx)
    for c in COMORBIDITIES:
        out.update(c.codes)
    for codes, _, _ in TOBACCO:
        out.update(codes)
    for bmi in range(30, 75):
        out.update(obesity_codes(bmi))
    return out


def all_cpt_codes() -> set[str]:
    return {p.cpt for p in PROCEDURES}
