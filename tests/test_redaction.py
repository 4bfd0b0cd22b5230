"""One redaction rule for every message: a value is shown only when it is a well-formed code-shaped
token (`K8O.2O`, `47562`, `RT`), never free text of any length or quoting. Tested on the rule
itself, on every normaliser and reader in-process, and with a canary through every verb that
reads a user file (outcome only: exit 2 and the canary absent from stdout and stderr)."""

import json
import subprocess

import pytest

from opclaim import codes, ingest
from opclaim import io as oio
from opclaim.claim import Case, Claim
from opclaim.errors import InputError, redact, show
from tests.conftest import ROOT, VENV_BIN, opclaim_exe
from tests.malformed_records import CANARY, GOOD, SHORT_CANARY, leaks

QUOTINGS = [CANARY, SHORT_CANARY, "Jo Smith", "O'Brien", 'say "hi" Smith', "x" * 5000, "Smith\n", "J.S.",
            "smith", "HIV+", "1/2/1950"]


@pytest.mark.parametrize("token", ["K8O.2O", "K80.20", "47562", "0042T", "J1100", "RT", "80", "S72.001A", "k8020"])
def test_code_shaped_tokens_are_shown(token):
    assert show(token) == f"'{token}'"
    assert redact(f"malformed code {token!r}") == f"malformed code '{token}'"


@pytest.mark.parametrize("text", QUOTINGS)
def test_free_text_is_never_shown_whatever_its_quoting(text):
    assert text not in show(text) and "characters" in show(text)
    for msg in (f"bad value {text!r}", f'bad value "{text}"', f"bad value '{text}'"):
        out = redact(msg)
        assert text not in out or len(text) < 3, out
    assert text not in str(InputError(f"malformed ICD-10-CM code {text!r}", field="claim.icd10[0]"))


def test_numbers_and_containers_are_described_not_shown():
    assert show(123456789) == "<integer>" and show(True) == "<boolean>" and show(None) == "<null>"
    assert show([CANARY]) == "<list of 1 items>" and CANARY not in show({"a": CANARY})


@pytest.mark.parametrize("text", QUOTINGS)
def test_every_normaliser_and_record_reader_hides_free_text(text, tmp_path):
    for norm in (codes.normalize_icd10, codes.normalize_cpt, codes.normalize_modifier):
        with pytest.raises(InputError) as e:
            norm(text)
        assert text not in str(e.value)
    places = [("icd10", lambda d: d["claim"]["icd10"].append(text)),
              ("cpt", lambda d: d["claim"]["providers"][0]["lines"][0].update(cpt=text)),
              ("mod", lambda d: d["claim"]["providers"][0]["lines"][0].update(modifiers=[text])),
              ("date", lambda d: d.update(date=text)),
              ("sex", lambda d: d.update(patient={"sex": text}))]
    for name, put in places:
        d = json.loads(json.dumps(GOOD))
        put(d)
        with pytest.raises(InputError) as e:
            Case.from_dict(d)
        assert text not in str(e.value), name
        p = tmp_path / f"{name}.jsonl"
        p.write_text(json.dumps(d) + "\n")
        with pytest.raises(InputError) as e:
            oio.read_cases(p)
        assert text not in str(e.value), name
        if name == "date" and text == "1/2/1950":
            continue  # a real date to validate, which rewrites it as 1950-01-02
        report = ingest.validate(p)
        assert len(report.rejected) == 1 and text not in report.rejected[0][0].reason, name
    with pytest.raises(InputError) as e:
        Claim.from_dict({"providers": [{"name": "A", "lines": [{"cpt": "47562", "modifiers": f"80, {text}"}]}]})
    assert text not in str(e.value)


# ---------------------------------------------------------------- every verb, end to end
def _bad_cases(tmp_path, name, put):
    d = json.loads(json.dumps(GOOD))
    put(d)
    p = tmp_path / name
    p.write_text(json.dumps(GOOD) + "\n" + json.dumps(d) + "\n")
    return p


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_canary_never_reaches_any_verb_output(tmp_path, tiny_phi3_dir, cli_env):
    apos = f"O'Brien {CANARY}"
    icd = _bad_cases(tmp_path, "icd.jsonl", lambda d: d["claim"]["icd10"].append(apos))
    cpt = _bad_cases(tmp_path, "cpt.jsonl", lambda d: d["claim"]["providers"][0]["lines"][0].update(cpt=SHORT_CANARY))
    mod = _bad_cases(tmp_path, "mod.jsonl", lambda d: d["claim"]["providers"][0]["lines"][0].update(
        modifiers=[f'"{CANARY}"']))
    date = _bad_cases(tmp_path, "date.jsonl", lambda d: d.update(date=CANARY))
    sex = _bad_cases(tmp_path, "sex.jsonl", lambda d: d.update(patient={"sex": CANARY}))
    good = tmp_path / "gold.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": CANARY, "output": "x"}) + "\n")
    py, recipe, tiny = str(VENV_BIN / "python"), "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml", str(tiny_phi3_dir)
    o = tmp_path / "out"
    verbs = {
        "data validate": [opclaim_exe(), "data", "validate", str(icd)],
        "data split": [opclaim_exe(), "data", "split", str(icd), "--out", str(o / "split")],
        "data stats": [opclaim_exe(), "data", "stats", str(cpt), "--out", str(o / "stats")],
        "eval (gold)": [opclaim_exe(), "eval", "--predictions", str(preds), "--gold", str(mod), "--out", str(o / "e1")],
        "eval (predictions)": [opclaim_exe(), "eval", "--predictions", str(preds), "--gold", str(good),
                               "--out", str(o / "e2")],
        "infer": [opclaim_exe(), "infer", "--model", tiny, "--mode", "base", "--cases", str(date),
                  "--out", str(o / "p.jsonl")],
        "python -m infer": [py, "-m", "infer", "--model", tiny, "--mode", "base", "--cases", str(sex),
                            "--out", str(o / "q.jsonl")],
        "python -m train": [py, "-m", "train", "--config", recipe, "--model_name_or_path", tiny,
                            "--train_file", str(icd), "--output_dir", str(o / "t"), "--max_steps", "1"],
    }
    # Started together: each one fails on its input before any model work.
    procs = {k: subprocess.Popen(v, cwd=ROOT, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, v in verbs.items()}
    failures = []
    for k, p in procs.items():
        out, err = p.communicate(timeout=300)
        text = out + err
        if p.returncode != 2 or leaks(text) or "Traceback" in text:
            failures.append(f"{k}: exit {p.returncode}: {err[-600:]}")
    assert not failures, "\n".join(failures)



@pytest.mark.slow
def test_canary_never_reaches_accelerate_launch_output(tmp_path, tiny_phi3_dir, cli_env):
    """Two ranks under `accelerate launch`: each rank's message is redacted. The exit code is the
    launcher's (torch elastic reports a failed child as 1 with its own traceback), so only the
    canary and a non-zero exit are asserted here."""
    icd = _bad_cases(tmp_path, "icd.jsonl", lambda d: d["claim"]["icd10"].append(f"O'Brien {CANARY}"))
    cmd = [str(VENV_BIN / "accelerate"), "launch", "--config_file", "ds_configs/zero3-cpu2.yaml", "-m", "train",
           "--config", "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml", "--model_name_or_path", str(tiny_phi3_dir),
           "--train_file", str(icd), "--output_dir", str(tmp_path / "t"), "--max_steps", "1"]
    r = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "train: error:" in r.stderr, r.stderr[-2000:]
    assert not leaks(r.stdout + r.stderr)
