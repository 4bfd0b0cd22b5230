"""`opclaim rag build|query` and `opclaim knn`. Heavy imports stay inside the verbs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from opclaim.cli import verb
from opclaim.errors import InputError


def register(subs):
    p = subs.add_parser("rag", help="MiniLM + FAISS index of training notes (RAG examples)")
    rs = p.add_subparsers(dest="rag_verb", metavar="VERB", required=True)
    b = verb(rs, "build", "embed training notes with MiniLM into a FAISS flat-L2 index", """
opclaim rag build --train data/train.jsonl --out runs/rag-index
opclaim rag build --train data/train.jsonl --out runs/rag-chunk --mode chunk --batch-size 32 --threads 2
opclaim rag build --train data/train.jsonl --out runs/rag-index --rejects runs/rag-rejects.jsonl""", build_main)
    b.add_argument("--train", required=True, help="training cases (JSONL)")
    b.add_argument("--out", required=True, help="index folder to write (replaces an earlier index)")
    b.add_argument("--mode", choices=("truncate", "chunk"), default="truncate",
                   help="truncate: first 256 word pieces, as in the study (default); "
                        "chunk: average over every 256-piece window")
    b.add_argument("--batch-size", type=int, default=64, help="notes per embedding batch (default 64)")
    b.add_argument("--threads", type=int, help="torch/FAISS threads (default: library default)")
    b.add_argument("--rejects", help="skip bad records and list them (id, line, reason) here "
                                     "instead of stopping at the first")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")

    q = verb(rs, "query", "print the nearest training claims for one note (JSON lines)", """
opclaim rag query --index runs/rag-index --note-file note.txt
opclaim rag query --index runs/rag-index --note-file note.txt --k 5 --exclude-id c000123
opclaim rag query --index runs/rag-index --note-file note.txt --render""", query_main)
    q.add_argument("--index", required=True, help="index folder from `opclaim rag build`")
    q.add_argument("--note-file", required=True, help="a text file holding one operative note")
    q.add_argument("--k", type=int, default=2, help="neighbours to return (default 2, as in the study)")
    q.add_argument("--exclude-id", help="leave this training id out (the note's own record)")
    q.add_argument("--train", help="check the index was built from this training file")
    q.add_argument("--render", action="store_true",
                   help="print the claims as the 'Relevant Example Claim' text of the RAG prompt")

    k = verb(subs, "knn", "retrieval-only baseline: similarity-weighted votes of the nearest claims", """
opclaim knn --index runs/rag-index --cases data/test.jsonl --val data/val.jsonl --out runs/knn/preds.jsonl
opclaim knn --index runs/rag-index --cases data/test.jsonl --k 5 --threshold 0.5 --out preds.jsonl
opclaim eval --predictions runs/knn/preds.jsonl --gold data/test.jsonl --out runs/knn/eval""", knn_main)
    k.add_argument("--index", required=True, help="index folder from `opclaim rag build`")
    k.add_argument("--cases", required=True, help="cases to predict (JSONL)")
    k.add_argument("--out", required=True, help="predictions JSONL (config 'knn')")
    k.add_argument("--val", help="validation cases: choose k and threshold on them (recommended)")
    k.add_argument("--k", type=int, help="neighbours that vote (default 5; ignored with --val)")
    k.add_argument("--threshold", type=float, help="weighted share a code needs (default 0.5; ignored with --val)")
    k.add_argument("--train", help="check the index was built from this training file")
    k.add_argument("--prompt-format", choices=("phi3", "generic"), default="phi3",
                   help="target text markers to write (default phi3, as the study)")
    k.add_argument("--batch-size", type=int, default=64, help="notes per embedding batch")
    k.add_argument("--threads", type=int, help="torch/FAISS threads")
    k.add_argument("--no-progress", action="store_true")


def _read_lenient(path, rejects_path):
    """Cases that parse and have a non-empty note; the rest go to the rejects file (no note text)."""
    from opclaim.claim import Case
    from opclaim.io import iter_jsonl_records, write_jsonl
    from rag.embed import clean_note

    cases, rejects, seen = [], [], set()
    for n, obj, problem in iter_jsonl_records(path):  # a malformed line is a reject, not the end
        rid = obj.get("id") if obj is not None else None
        try:
            if problem is not None:
                raise problem
            case = Case.from_dict(obj)
            if case.id in seen:
                raise InputError("duplicate id", field="id")
            if not clean_note(case.note):
                raise InputError("note is empty after cleaning", field="note")
        except InputError as e:
            rejects.append({"line": n, "id": rid if isinstance(rid, (str, int)) else None,
                            "field": e.field, "reason": e.reason})
            continue
        seen.add(case.id)
        cases.append(case)
    write_jsonl(rejects_path, rejects, private=True)
    if rejects:
        sys.stderr.write(f"rejected {len(rejects)} records -> {rejects_path}\n")
    return cases


def build_main(args) -> int:
    from opclaim.io import read_cases
    from rag.index import build_index

    if args.rejects:
        cases = _read_lenient(args.train, args.rejects)
        if not cases:
            raise InputError("no usable training records", file=args.train)
    else:
        cases = read_cases(args.train)
    out = build_index(cases, args.out, mode=args.mode, batch_size=args.batch_size, threads=args.threads,
                      train_file=args.train, progress=not args.no_progress)
    print(f"wrote {out} ({len(cases)} notes, mode {args.mode})")
    return 0


def _read_note(path) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"bytes that are not UTF-8 at offset {e.start}", file=p) from None
    from rag.embed import clean_note

    if not clean_note(text):
        raise InputError("note is empty after cleaning", file=p, field="note")
    return text


def query_main(args) -> int:
    from opclaim.claim import render_target
    from rag.retrieve import Retriever

    note = _read_note(args.note_file)
    r = Retriever.load(args.index, train_file=args.train)
    hits = r.neighbours(r.embed([note]), args.k, [args.exclude_id])[0]
    for rank, (row, d) in enumerate(hits, 1):
        claim = r.claims[row]
        if args.render:
            print(f"Relevant Example Claim {rank}:\n{render_target(claim)}")
        else:
            print(json.dumps({"rank": rank, "id": r.ids[row], "distance": round(d, 6),
                              "cosine": round(1 - d / 2, 6), "claim": claim.to_dict()}))
    return 0


def knn_main(args) -> int:
    from opclaim.io import read_cases, write_jsonl
    from prompts import get_format
    from rag import knn
    from rag.retrieve import Retriever

    cases = read_cases(args.cases)  # bad input fails before the model loads
    val = read_cases(args.val) if args.val else None
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise InputError("threshold must be in [0, 1]", field="--threshold")
    r = Retriever.load(args.index, train_file=args.train, threads=args.threads, batch_size=args.batch_size)
    if val:
        params, table = knn.choose_params(r, val)
        chosen = "validation"
    else:
        params = knn.KnnParams(args.k or knn.KnnParams.k, args.threshold if args.threshold is not None
                               else knn.KnnParams.threshold)
        table, chosen = [], "given"
        sys.stderr.write("note: k and threshold not chosen on a validation file (use --val)\n")
    markers = get_format(args.prompt_format).markers
    rows = knn.predict(r, cases, params, fmt_markers=markers, progress=not args.no_progress)
    n = write_jsonl(args.out, rows, private=True)
    # Settings beside the predictions (codes and numbers only, no note text).
    side = Path(args.out).with_suffix(".knn.json")
    from opclaim.io import atomic_write

    with atomic_write(side) as fh:
        json.dump({"k": params.k, "threshold": params.threshold, "chosen_on": chosen,
                   "validation_grid": table, "index_manifest": r.manifest}, fh, indent=2)
    print(f"wrote {n} predictions to {args.out} (k={params.k}, threshold={params.threshold}, {chosen})")
    return 0
