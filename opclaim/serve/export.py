"""Coder-final claims back into training cases, with provenance, and the agreement report."""

from __future__ import annotations

import json
from pathlib import Path

from opclaim.serve.decisions import agreement


def export_rows(store) -> tuple[list[dict], dict]:
    """(case records, report). A case whose note was not stored cannot become a training case:
    it is counted under `skipped_no_note`; agreement counts every decided case."""
    rows, totals = [], {s: {"accepted": 0, "rejected": 0, "added": 0} for s in ("icd10", "cpt", "modifiers")}
    skipped = 0
    finals = store.final_decisions()
    for d in finals:
        case = store.case(d["case_id"])
        sug = None
        if d["suggestion_id"] is not None:
            r = store.query("SELECT claim FROM suggestions WHERE id = ?", (d["suggestion_id"],))
            sug = json.loads(r[0]["claim"]) if r else None
        for system, counts in agreement(sug, d["final_claim"]).items():
            for k, n in counts.items():
                totals[system][k] += n
        if case["note"] is None:
            skipped += 1
            continue
        if not d["final_claim"].get("icd10") and not d["final_claim"].get("providers"):
            skipped += 1  # an all-rejected claim is not a training target
            continue
        chain = [x["id"] for x in store.decisions(d["case_id"])]
        rows.append({"id": case["external_id"], "date": case["date"], "service": case["service"],
                     "note": case["note"], "claim": d["final_claim"], "source": "serve",
                     **({"patient": case["patient"]} if case["patient"] else {}),
                     "provenance": {"decision_id": d["id"], "decisions": chain, "user": d["user"],
                                    "decided_at": d["created_at"], "model": d["model"],
                                    "bundle_digest": d["bundle_digest"], "suggestion_id": d["suggestion_id"]}})
    for counts in totals.values():
        kept = counts["accepted"] + counts["rejected"]
        counts["acceptance"] = round(counts["accepted"] / kept, 4) if kept else None
    report = {"decided_cases": len(finals), "exported": len(rows), "skipped_no_note_or_empty": skipped,
              "agreement": totals}
    return rows, report


def export(store, out: str | Path) -> dict:
    """Write cases JSONL (0600: it holds note text) and OUT.agreement.json; returns the report."""
    from opclaim.io import atomic_write

    rows, report = export_rows(store)
    out = Path(out)
    with atomic_write(out, private=True) as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    with atomic_write(out.with_name(out.name + ".agreement.json")) as fh:
        json.dump(report, fh, indent=1)
        fh.write("\n")
    return report
