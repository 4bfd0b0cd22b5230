"""`opclaim serve`: the in-enclave coding service; `serve user add` and `serve export`."""

from __future__ import annotations

import ipaddress
import sys

from opclaim.cli import verb
from opclaim.errors import InputError

EXAMPLES = """
opclaim serve --bundle bundles/phi3 --key keys/opclaim_signing.pub --db /var/lib/opclaim/serve.db
opclaim serve --model models/tiny --db dev.db --store-notes --port 8080        # development, unsigned
opclaim serve user add alice --role coder --db /var/lib/opclaim/serve.db
opclaim serve export --db /var/lib/opclaim/serve.db --out cases.jsonl"""


def register(subs) -> None:
    p = verb(subs, "serve", "HTTP API and coder review page over a signed bundle, with an audit trail", EXAMPLES, main)
    src = p.add_argument_group("model (a signed bundle, or --model for development)")
    src.add_argument("--bundle", help="signed bundle folder (verified before anything loads)")
    src.add_argument("--key", help="public key (opclaim_signing.pub) for --bundle")
    src.add_argument("--model", help="unsigned model folder (development only)")
    src.add_argument("--adapter", help="unsigned LoRA adapter folder with --model")
    src.add_argument("--mode", choices=["finetuned", "base", "rag"], default="finetuned", help="prompt configuration")
    src.add_argument("--rag-index", help="index folder from `opclaim rag build` (implies --mode rag)")
    src.add_argument("--max-new-tokens", type=int, default=512, help="study: 512")
    src.add_argument("--repetition-scope", choices=["prompt", "generated", "off"], default="prompt",
                     help="as `opclaim infer --repetition-scope` (the retrieval-tuned model's: its model card)")
    src.add_argument("--threads", type=int, help="torch CPU threads")
    src.add_argument("--constrain", action="store_true",
                     help="decode with the claim grammar (as `opclaim infer --constrain`): only listed codes")
    src.add_argument("--icd-ref", help="with --constrain: ICD-10-CM list instead of all billable CMS codes")
    src.add_argument("--cpt-from", help="with --constrain: cases file whose CPT codes are allowed")
    src.add_argument("--grammar-cache", help="folder for compiled grammars (default ~/.cache/opclaim/grammars)")
    src.add_argument("--calibration", help="cal.json from `opclaim calibrate` (as `opclaim infer --calibration`): "
                     "each code's route is auto/review at the threshold chosen on validation for its target precision")
    p.add_argument("--db", default="opclaim-serve.db",
                   help="SQLite file (created 0600), sqlite:///FILE, or postgresql://USER@HOST/DB (password: ~/.pgpass)")
    p.add_argument("--store-notes", action="store_true",
                   help="keep note text in the database (needed for export); default: in memory until decided")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; anything else warns)")
    p.add_argument("--port", type=int, default=8321)
    p.add_argument("--max-batch", type=int, default=8, help="suggestions decoded together at most")
    p.add_argument("--batch-window-ms", type=float, default=20.0,
                   help="how long a batch waits for company; each arrival keeps it open this long again")
    p.add_argument("--batch-max-wait-ms", type=float, help="the longest a batch stays open (default 5 windows)")
    p.add_argument("--cpt-ref", help="CPT/HCPCS list (one per line): only these may be entered")
    p.add_argument("--modifiers", help="modifier list replacing the built-in table")
    p.add_argument("--login-failures", type=int, default=10,
                   help="failed logins per address, and per presented token, per window before 429")
    p.add_argument("--login-window-s", type=int, default=300, help="the failed-login window (seconds)")
    p.add_argument("--cookie-secure", action="store_true", help="mark the session cookie Secure (behind TLS)")
    p.add_argument("--trusted-proxy-header", metavar="NAME",
                   help="header naming the client address (e.g. X-Forwarded-For; its last entry), "
                        "honoured only from --trusted-proxy peers")
    p.add_argument("--trusted-proxy", action="append", metavar="ADDR",
                   help="address of the reverse proxy (repeatable; default 127.0.0.1 and ::1)")
    p.add_argument("--public-origin", metavar="URL",
                   help="scheme://host[:port] browsers use (sign-in Origin check; default: the request's own)")
    p.add_argument("--lease-s", type=int, default=900, help="how long POST /v1/cases/next holds a case for its coder")
    ss = p.add_subparsers(dest="serve_verb", metavar="VERB")
    u = ss.add_parser("user", help="manage users")
    us = u.add_subparsers(dest="user_verb", metavar="VERB", required=True)
    ua = verb(us, "add", "add a user and print their token once (stored hashed)",
              "opclaim serve user add alice --role coder --db serve.db", user_add)
    ua.add_argument("name", metavar="NAME")
    ua.add_argument("--role", choices=["coder", "admin"], required=True)
    ua.add_argument("--db", required=True)
    ud = verb(us, "disable", "revoke a user's token (the user row stays: decisions point at it)",
              "opclaim serve user disable alice --db serve.db", user_disable)
    ud.add_argument("name", metavar="NAME")
    ud.add_argument("--db", required=True)
    ex = verb(ss, "export", "write coder-final claims as training cases, plus an agreement report",
              "opclaim serve export --db serve.db --out cases.jsonl", export_main)
    ex.add_argument("--db", required=True)
    ex.add_argument("--out", required=True, help="cases JSONL (0600); OUT.agreement.json beside it")


def user_add(args) -> int:
    from opclaim.serve.db import Store

    store = Store(args.db)
    token = store.add_user(args.name, args.role)
    print(token)
    sys.stderr.write(f"added {args.role} {args.name}; the token above is shown once and stored only as a hash\n")
    return 0


def user_disable(args) -> int:
    from opclaim.serve.db import Store

    Store(args.db).disable_user(args.name)
    print(f"disabled {args.name}")
    return 0


def export_main(args) -> int:
    from opclaim.serve.db import Store, db_path, dialect_of
    from opclaim.serve.export import export

    if dialect_of(args.db) == "sqlite" and not db_path(args.db).is_file():  # export never creates one
        raise InputError("database not found", file=args.db)
    report = export(Store(args.db), args.out)
    print(f"wrote {args.out}: {report['exported']} cases ({report['decided_cases']} decided, "
          f"{report['skipped_no_note_or_empty']} without stored note or with an empty claim)")
    for system, c in report["agreement"].items():
        print(f"  {system}: accepted {c['accepted']}  rejected {c['rejected']}  added {c['added']}  "
              f"acceptance {c['acceptance']}")
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_setup():
    """Our own log lines only: uvicorn's access log (full paths and query strings) is off, and no
    exception text or traceback is printed (messages can quote data)."""
    import logging

    class NoExceptionText(logging.Filter):
        def filter(self, record):
            if record.exc_info:
                et = record.exc_info[0]
                record.msg, record.args = f"{record.getMessage()[:200]} [{et.__name__ if et else 'error'}]", ()
                record.exc_info, record.exc_text = None, None
            return True

    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.addFilter(NoExceptionText())
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def main(args) -> int:
    if args.serve_verb:  # handled by the sub-verb's func
        raise InputError("unknown serve verb")
    from pathlib import Path

    if bool(args.bundle) == bool(args.model):
        raise InputError("give --bundle DIR --key PUB (or --model DIR for development)", field="--bundle")
    if args.bundle and not args.key:
        raise InputError("a bundle is verified with its public key: --key PUB", field="--key")
    if args.adapter and not args.model:
        raise InputError("--adapter goes with --model (a bundle carries its own adapter)", field="--adapter")
    if args.max_new_tokens < 1 or args.max_batch < 1:
        raise InputError("must be >= 1", field="--max-new-tokens/--max-batch")
    _log_setup()
    import logging

    log = logging.getLogger("opclaim.serve")
    if not is_loopback(args.host):
        log.warning("binding to %s, not loopback: put TLS and a firewall in front (docs/serve.md)", args.host)
    from opclaim.serve.db import Store
    from opclaim.serve.decisions import CodeRules

    store = Store(args.db, store_notes=args.store_notes)  # bad --db fails before the model loads
    from opclaim.codes import icd10_billable, load_code_list, modifier_table

    icd10_billable()  # build the 74k-code set now, not inside the first decision
    rules = CodeRules(load_code_list(args.cpt_ref) if args.cpt_ref else None, modifier_table(args.modifiers))
    bundle_dir = None
    model, adapter = args.model, args.adapter
    if args.bundle:
        from opclaim import bundle

        manifest = bundle.verify(args.bundle, args.key)  # refuses a tampered bundle: nothing loads
        bundle_dir = Path(args.bundle)
        model = bundle_dir / "model"
        adapter = bundle_dir / "adapter" if any(f.startswith("adapter/") for f in manifest["files"]) else None
        log.info("bundle verified: %d files, signature OK", len(manifest["files"]))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from opclaim.serve.app import Settings, create_app
    from opclaim.serve.batcher import Batcher
    from opclaim.serve.engine import load_engine

    engine = load_engine(model, adapter, mode=args.mode, rag_index=args.rag_index,
                         max_new_tokens=args.max_new_tokens, bundle_dir=bundle_dir,
                         repetition_scope=args.repetition_scope, calibration=args.calibration,
                         constrain={"icd_ref": args.icd_ref, "cpt_ref": args.cpt_ref, "cpt_from": args.cpt_from,
                                    "mod_ref": args.modifiers, "cache": args.grammar_cache} if args.constrain else None)
    app_holder = {}
    batcher = Batcher(engine.generate, max_batch=args.max_batch, window_s=args.batch_window_ms / 1000,
                      max_wait_s=args.batch_max_wait_ms / 1000 if args.batch_max_wait_ms is not None else None,
                      on_batch=lambda n: app_holder["app"].state.metrics.batch.observe(n))
    app = create_app(store, engine, batcher, Settings(
        store_notes=args.store_notes, cookie_secure=args.cookie_secure, rules=rules,
        login_failures=args.login_failures, login_window_s=args.login_window_s, lease_s=args.lease_s,
        trusted_proxy_header=args.trusted_proxy_header,
        trusted_proxies=tuple(args.trusted_proxy or ("127.0.0.1", "::1")), public_origin=args.public_origin))
    app_holder["app"] = app
    import uvicorn

    log.info("serving %s on http://%s:%d (model %s)", "bundle" if bundle_dir else "model", args.host, args.port,
             engine.model_id)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, server_header=False,
                timeout_graceful_shutdown=5)
    batcher.stop()
    store.close()
    return 0
