"""Word lists the writers draw from: invented people, medications, and ruled-out conditions.

All names are invented combinations; no record of any real patient or clinician is used.
"""

FIRST = ["Alicia", "Brian", "Carmen", "David", "Elena", "Farid", "Grace", "Hector", "Ingrid", "Jamal",
         "Keiko", "Luis", "Maya", "Nikhil", "Olivia", "Pavel", "Quinn", "Rosa", "Samuel", "Tara",
         "Umar", "Vera", "Wesley", "Ximena", "Yusuf", "Zoe", "Amara", "Benedikt", "Chloe", "Dmitri",
         "Esther", "Felix", "Gwen", "Hiro", "Isla", "Jonah", "Kavya", "Leon", "Mira", "Noel"]
LAST = ["Rivera", "Chen", "Okafor", "Lindqvist", "Haddad", "Moreau", "Nakamura", "Petrov", "Schultz",
        "Adeyemi", "Barros", "Castillo", "Dunleavy", "Eriksen", "Fitzgerald", "Gallo", "Horvat", "Iqbal",
        "Jovanovic", "Kowalski", "Larsen", "Mbeki", "Novak", "Oyelaran", "Park", "Quintero", "Rasmussen",
        "Sato", "Toivonen", "Usman", "Valdez", "Whitaker", "Xu", "Yilmaz", "Zielinski", "Abernathy",
        "Bhatt", "Coleman", "Delacroix", "Engel"]

# (dictation phrase, terse phrase, test that ruled it out): never coded.
RULED_OUT = [
    ("pulmonary embolism", "PE", "CT angiography"),
    ("deep vein thrombosis", "DVT", "venous duplex"),
    ("malignancy", "malig", "frozen section"),
    ("occult fracture", "occult fx", "MRI"),
    ("septic arthritis", "septic joint", "joint aspiration"),
    ("acute coronary syndrome", "ACS", "serial troponins"),
    ("urinary tract infection", "UTI", "urinalysis"),
    ("pneumonia", "PNA", "chest radiograph"),
    ("retinal tear", "retinal tear", "scleral depressed examination"),
    ("ovarian torsion", "torsion", "Doppler ultrasound"),
    ("stroke", "CVA", "MRI of the brain"),
    ("bowel obstruction", "SBO", "abdominal series"),
]

MEDS = [("lisinopril", "10 mg daily"), ("atorvastatin", "40 mg nightly"), ("metoprolol succinate", "50 mg daily"),
        ("amlodipine", "5 mg daily"), ("omeprazole", "20 mg daily"), ("sertraline", "50 mg daily"),
        ("acetaminophen", "650 mg every 6 hours as needed"), ("gabapentin", "300 mg three times daily"),
        ("vitamin D3", "2000 units daily"), ("tamsulosin", "0.4 mg nightly"), ("fluticasone nasal", "2 sprays daily"),
        ("montelukast", "10 mg nightly"), ("hydrochlorothiazide", "25 mg daily"), ("latanoprost", "1 drop nightly"),
        ("timolol", "1 drop twice daily"), ("cetirizine", "10 mg daily"), ("melatonin", "3 mg nightly"),
        ("docusate", "100 mg twice daily"), ("calcium carbonate", "500 mg twice daily"), ("multivitamin", "1 tablet daily")]
