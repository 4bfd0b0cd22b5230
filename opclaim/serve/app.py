"""FastAPI application: the versioned API, the coder page, auth, metrics and PHI-safe logging.

Auth: `Authorization: Bearer TOKEN` on everything but /healthz (and the sign-in page). The page
signs in with the token once and then holds a session cookie (HttpOnly, SameSite=Strict); a
request authenticated by cookie that changes state must also carry the session's CSRF token
(header X-CSRF-Token, or the form field `csrf`). Failed logins are counted per client address and
per presented credential, separately; a valid token is never refused for someone else's failures.

Bodies: refused with 413 by Content-Length and while streaming, before a byte past the limit is
read; a request without valid credentials reads no body at all (only /login reads one, <= 4 KB).

Logging: one line per request (request id, method, route template, status, ms, user id), never a
query string, a body or an exception message; method, route and status come from closed sets; errors reach the client as a generic message with
the request id.
"""

import asyncio
import hmac
import json
import logging
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from opclaim.errors import InputError
from opclaim.serve.db import DecisionConflict, LeaseHeld, Store
from opclaim.serve.decisions import CodeRules, agreement, final_claim

log = logging.getLogger("opclaim.serve")
API = "/v1"
MAX_NOTE_CHARS = 200_000
MAX_BATCH_BYTES = 50_000_000
MAX_BODY_BYTES = 2_000_000       # one JSON request: a 200,000-character note escaped as \uXXXX fits
MAX_FORM_BYTES = 4096            # /login and /logout, read before anyone is known
MAX_KEY_CHARS = 100              # Idempotency-Key / client_key
SESSION_COOKIE = "opclaim_session"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
STATUSES = (200, 201, 204, 303, 400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 503)


def method_label(method: str) -> str:
    """A metric/log label from a closed set: anything else a client sends is `other`."""
    return method if method in METHODS else "other"


def status_label(status: int) -> str:
    return str(status) if status in STATUSES else f"{status // 100}xx"


class BodyTooLarge(StarletteHTTPException):
    def __init__(self):
        super().__init__(413)


@dataclass
class Settings:
    store_notes: bool = False
    cookie_secure: bool = False       # set behind TLS (a reverse proxy)
    session_ttl_s: int = 8 * 3600
    login_failures: int = 10          # per client address, and per presented credential, per window; then 429
    login_window_s: int = 300
    lease_s: int = 900
    max_body_bytes: int = MAX_BODY_BYTES
    trusted_proxy_header: str | None = None   # e.g. X-Forwarded-For, honoured from trusted_proxies only
    trusted_proxies: tuple = ("127.0.0.1", "::1")
    public_origin: str | None = None  # scheme://host[:port] the browser sees (default: the request's own)
    rules: CodeRules = field(default_factory=CodeRules)


class LoginLimiter:
    """Failures per key (`addr:...` or `cred:<sha256>`) in a sliding window; at most MAX_KEYS keys
    are remembered (the oldest are forgotten), so a flood of random tokens cannot grow it."""

    MAX_KEYS = 10_000

    def __init__(self, limit: int, window_s: int):
        self.limit, self.window_s = limit, window_s
        self.fails: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def blocked(self, who: str) -> bool:
        with self.lock:
            t = time.monotonic()
            recent = [x for x in self.fails.get(who, []) if t - x < self.window_s]
            self.fails[who] = recent
            return len(recent) >= self.limit

    def fail(self, who: str) -> None:
        with self.lock:
            self.fails.setdefault(who, []).append(time.monotonic())
            self.fails[who] = self.fails[who][-self.limit:]
            while len(self.fails) > self.MAX_KEYS:
                self.fails.pop(next(iter(self.fails)))


class Metrics:
    def __init__(self, store: Store, batcher):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("opclaim_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("opclaim_request_seconds", "HTTP request latency", ["route"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.suggest = Histogram("opclaim_suggest_seconds", "time to a suggestion, queueing included", registry=r,
                                 buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.batch = Histogram("opclaim_decode_batch_size", "prompts per decoded batch", registry=r,
                               buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
        self.codes = Counter("opclaim_decision_codes", "suggested/added codes by outcome", ["system", "outcome"],
                             registry=r)
        self.login_failures = Counter("opclaim_login_failures", "failed authentications", registry=r)
        Gauge("opclaim_queue_depth", "cases awaiting a decision", registry=r).set_function(store.queue_depth)
        Gauge("opclaim_decode_pending", "suggestions waiting for the decoder", registry=r).set_function(
            lambda: batcher.pending() if batcher else 0)
        acc = Gauge("opclaim_acceptance_ratio", "accepted / suggested codes, per code system", ["system"], registry=r)
        for s in ("icd10", "cpt", "modifiers"):
            acc.labels(s).set_function(lambda s=s: self._ratio(s))
        self._tally: dict = {}

    def decided(self, agree: dict) -> None:
        for system, d in agree.items():
            for outcome, n in d.items():
                if n:
                    self.codes.labels(system, outcome).inc(n)
                    self._tally[(system, outcome)] = self._tally.get((system, outcome), 0) + n

    def _ratio(self, system: str) -> float:
        a, r = self._tally.get((system, "accepted"), 0), self._tally.get((system, "rejected"), 0)
        return a / (a + r) if a + r else float("nan")


# ------------------------------------------------------------ models (OpenAPI)
CaseId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]  # SQLite's INTEGER range

class Patient(BaseModel):
    age: int | None = Field(None, ge=0, le=120)
    sex: str | None = Field(None, pattern="^[FMU]$")

class SuggestIn(BaseModel):
    note: str = Field(..., min_length=1, max_length=MAX_NOTE_CHARS)
    service: str | None = Field(None, max_length=200)
    date: str | None = Field(None, max_length=40)
    patient: Patient | None = None

class CodeRow(BaseModel):
    system: str
    code: str
    description: str | None = None
    valid: bool = True
    modifiers: list[str] | None = None
    provider: str | None = None
    confidence: float | None = None
    route: str | None = None
    evidence: list | None = None

class SuggestOut(BaseModel):
    claim: dict
    output: str  # the model's text, as `opclaim infer` writes it (response body only, never logged)
    codes: list[CodeRow]
    flags: list[str]
    model: str
    bundle_digest: str | None
    latency_s: float
    batch_size: int
    request_id: str

class Item(BaseModel):
    system: str
    action: str
    code: str | None = None
    to: str | None = None
    modifiers: list[str] | None = None
    provider: str | None = None

class DecisionIn(BaseModel):
    items: list[Item]
    final_claim: dict | None = None
    amends: int | None = None
    client_key: str | None = Field(None, max_length=100)


def create_app(store: Store, engine, batcher, settings: Settings | None = None):
    from opclaim.serve import page

    settings = settings or Settings()
    app = FastAPI(title="opclaim serve", version="1", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Operative note -> claim suggestions, a coder queue and an append-only audit trail.")
    metrics = Metrics(store, batcher)
    limiter = LoginLimiter(settings.login_failures, settings.login_window_s)
    sessions: dict[str, dict] = {}  # sha256(session id) -> {user, csrf, expires}; in memory: restart = sign in again
    notes: dict[int, str] = {}      # case id -> note when notes are not stored (until decided or restart)
    tasks: set = set()
    app.state.store, app.state.metrics, app.state.notes = store, metrics, notes

    class Fail(Exception):
        def __init__(self, status: int, error: str, fld: str | None = None, headers=None):
            self.status, self.error, self.field, self.headers = status, error, fld, headers

    # ------------------------------------------------------------ errors and logging
    def _err(request, status, error, fld=None, headers=None):
        body = {"error": error, "request_id": getattr(request.state, "rid", None)}
        if fld:
            body["field"] = fld
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(Fail)
    async def _fail(request, e: Fail):
        return _err(request, e.status, e.error, e.field, e.headers)

    @app.exception_handler(InputError)
    async def _input(request, e: InputError):
        return _err(request, 422, e.reason, e.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        # FastAPI's default echoes the input (the note); only where and what kind go back
        where = [".".join(str(x) for x in err.get("loc", ()) if x != "body") for err in e.errors()]
        return _err(request, 422, "invalid request", ", ".join(w for w in where if w) or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e):
        msg = {404: "not found", 405: "method not allowed", 413: "request body too large"}.get(e.status_code,
                                                                                            "request refused")
        return _err(request, e.status_code, msg)

    # ------------------------------------------------------------ bodies: refused before they are read
    def body_limit(path: str, method: str) -> int:
        if path in ("/login", "/logout"):
            return MAX_FORM_BYTES
        if path == f"{API}/cases" and method == "POST":
            return MAX_BATCH_BYTES
        return settings.max_body_bytes

    def credentials_valid(headers: dict) -> bool:
        header = headers.get(b"authorization", b"").decode("latin-1")
        if header:
            scheme, _, token = header.partition(" ")
            return scheme.lower() == "bearer" and bool(token.strip()) and store.user_for_token(token.strip()) is not None
        from starlette.requests import cookie_parser

        sid = cookie_parser(headers.get(b"cookie", b"").decode("latin-1")).get(SESSION_COOKIE)
        s = sessions.get(_h(sid)) if sid else None
        return s is not None and s["expires"] >= time.time()

    class Guard:
        """Inside _frame (so refusals are logged and counted): Content-Length over the route's
        limit -> 413 unread; a body from a request without valid credentials is never read (the
        route answers 401 as if it were empty); a streamed body is cut at the limit with 413."""

        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            headers = dict(scope["headers"])
            limit = body_limit(scope["path"], scope["method"])
            cl = headers.get(b"content-length")
            rid = scope.get("state", {}).get("rid")

            async def refuse(status, error):
                await JSONResponse({"error": error, "request_id": rid}, status_code=status,
                                   headers={"Connection": "close"})(scope, receive, send)

            if cl is not None and (not cl.isdigit() or len(cl) > 18):
                return await refuse(400, "bad Content-Length")
            if cl is not None and int(cl) > limit:
                return await refuse(413, "request body too large")
            may_have_body = (cl not in (None, b"0")) or b"transfer-encoding" in headers
            if may_have_body and scope["path"] not in ("/login", "/logout") and not credentials_valid(headers):
                sent = [False]

                async def no_body():
                    if sent[0]:
                        return {"type": "http.disconnect"}
                    sent[0] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return await self.inner(scope, no_body, send)
            seen = [0]

            async def counted():
                msg = await receive()
                if msg["type"] == "http.request":
                    seen[0] += len(msg.get("body", b""))
                    if seen[0] > limit:
                        raise BodyTooLarge()
                return msg
            return await self.inner(scope, counted, send)

    app.add_middleware(Guard)

    @app.middleware("http")
    async def _frame(request: Request, call_next):
        rid = uuid.uuid4().hex[:16]
        request.state.rid = rid
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as e:  # noqa: BLE001 - generic to the client, type only in the log
            log.error("request %s failed: %s", rid, type(e).__name__)
            response = JSONResponse({"error": "internal error", "request_id": rid}, status_code=500)
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        dt = time.perf_counter() - t0
        method, status = method_label(request.method), status_label(response.status_code)
        metrics.requests.labels(method, route, status).inc()
        metrics.latency.labels(route).observe(dt)
        user = getattr(request.state, "user", None)
        log.info("%s %s %s %s %.1fms user=%s", rid, method, route, status, dt * 1000, user["id"] if user else "-")
        response.headers["X-Request-ID"] = rid
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    # ------------------------------------------------------------ auth
    def client(request) -> str:
        """The client address: the peer, or a trusted proxy's header naming the client (its last
        entry: the one the proxy added) when one is configured and the peer is that proxy."""
        import ipaddress

        peer = request.client.host if request.client else "?"
        name = settings.trusted_proxy_header
        if name and peer in settings.trusted_proxies:
            last = request.headers.get(name, "").split(",")[-1].strip()
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass
        return peer

    def refuse_bad_token(who: str, token: str) -> None:
        """A failed token: 429 when its address or the token itself failed too often, else 401."""
        cred = "cred:" + _h(token)
        if limiter.blocked("addr:" + who) or limiter.blocked(cred):
            raise Fail(429, "too many failed logins; try later", headers={"Retry-After": str(limiter.window_s)})
        limiter.fail("addr:" + who)
        limiter.fail(cred)
        metrics.login_failures.inc()
        raise Fail(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})

    def _session(request) -> dict | None:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid:
            return None
        s = sessions.get(_h(sid))
        live = s is not None and s["expires"] >= time.time() and store.query(
            "SELECT 1 FROM users WHERE id = ? AND disabled = 0", (s["user"]["id"],))
        if not live:  # expired, or the user was disabled since signing in
            sessions.pop(_h(sid), None)
            return None
        return s

    async def auth(request: Request) -> dict:
        who = client(request)
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            user = store.user_for_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
            if user is None:  # a valid token is never refused: failures only count against failures
                refuse_bad_token(who, header)
            request.state.user = user
            return user
        s = _session(request)
        if s is None:
            raise Fail(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get("x-csrf-token", "")
            if not sent or not hmac.compare_digest(sent, s["csrf"]):
                raise Fail(403, "CSRF token missing or wrong")
        request.state.user = s["user"]
        return s["user"]

    async def admin(user: dict = Depends(auth)) -> dict:
        if user["role"] != "admin":
            raise Fail(403, "admin role required")
        return user

    # ------------------------------------------------------------ suggestions
    async def suggest_note(note: str):
        t0 = time.perf_counter()
        s = await batcher.submit(note)
        metrics.suggest.observe(time.perf_counter() - t0)
        s.latency_s = round(time.perf_counter() - t0, 4)
        return s

    async def suggest_case(cid: int) -> dict | None:
        have = store.latest_suggestion(cid)
        if have is not None:
            return have
        c = store.case(cid)
        note = c["note"] if c and c["note"] is not None else notes.get(cid)
        if note is None:
            return None
        s = await suggest_note(note)
        if store.latest_suggestion(cid) is None:  # two viewers at once: keep the first
            store.add_suggestion(cid, s, engine.model_id, engine.bundle_digest)
        return store.latest_suggestion(cid)

    def schedule(cid: int) -> None:
        async def run():
            try:
                await suggest_case(cid)
            except Exception as e:  # noqa: BLE001 - the case stays queued; the page retries
                log.error("background suggestion for case %s failed: %s", cid, type(e).__name__)
        t = asyncio.get_running_loop().create_task(run())
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    def case_view(c: dict, suggestion, user) -> dict:
        out = {k: c[k] for k in ("id", "external_id", "service", "date", "patient", "status", "created_at")}
        out["note"] = c["note"] if c["note"] is not None else notes.get(c["id"])
        out["suggestion"] = suggestion
        out["decisions"] = store.decisions(c["id"])
        return out

    # ------------------------------------------------------------ API
    @app.get("/healthz", tags=["ops"])
    def healthz():
        return {"status": "ok", "model": engine.model_id, "bundle_digest": engine.bundle_digest,
                "schema_version": store.version()}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(user: dict = Depends(auth)):
        return app.openapi()

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics_text(user: dict = Depends(auth)):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(f"{API}/suggest", tags=["suggest"], response_model=SuggestOut)
    async def suggest(body: SuggestIn, request: Request, user: dict = Depends(auth)):
        s = await suggest_note(body.note)
        return {"claim": s.claim, "output": s.output, "codes": s.codes, "flags": s.flags, "model": engine.model_id,
                "bundle_digest": engine.bundle_digest, "latency_s": s.latency_s, "batch_size": s.batch_size,
                "request_id": request.state.rid}

    @app.post(f"{API}/cases", tags=["cases"], openapi_extra={"requestBody": {"required": True, "content": {
        "application/x-ndjson": {"schema": {"type": "string", "description": "one case record per line, as "
                                            "`opclaim data validate` reads; `claim` optional (a reference claim)"}}}}})
    async def enqueue(request: Request, user: dict = Depends(admin)):
        raw = await request.body()  # Guard refuses past MAX_BATCH_BYTES, by header and while streaming
        from starlette.concurrency import run_in_threadpool

        kept, rejected, flagged = await run_in_threadpool(validate_batch, raw)  # off the event loop
        added, dups = await run_in_threadpool(store.add_cases, kept, user["id"])
        by_ext = {c.id: c for c in kept}
        for a in added:
            if not settings.store_notes:
                notes[a["id"]] = by_ext[a["external_id"]].note
            schedule(a["id"])
        return {"accepted": added, "duplicates": dups, "rejected": rejected, "flagged": flagged}

    @app.get(f"{API}/cases", tags=["cases"])
    def list_cases(user: dict = Depends(auth)):
        return [{k: c[k] for k in ("id", "external_id", "service", "date", "status")} for c in store.queue()]

    @app.post(f"{API}/cases/next", tags=["cases"])
    async def next_case(user: dict = Depends(auth)):  # takes a lease: a POST (CSRF with a cookie)
        c = store.lease_next(user["id"], settings.lease_s)
        if c is None:
            return Response(status_code=204)
        return case_view(c, await suggest_case(c["id"]), user)

    @app.get(f"{API}/cases/{{case_id}}", tags=["cases"])
    async def get_case(case_id: CaseId, user: dict = Depends(auth)):
        c = store.case(case_id)
        if c is None:
            raise Fail(404, "not found")
        return case_view(c, await suggest_case(case_id), user)

    @app.post(f"{API}/cases/{{case_id}}/decision", tags=["cases"], status_code=201)
    def decide(case_id: CaseId, body: DecisionIn, request: Request, user: dict = Depends(auth)):
        import hashlib

        key = body.client_key or request.headers.get("idempotency-key") or None
        if key is not None and (len(key) > MAX_KEY_CHARS or not key.strip()):
            raise Fail(422, f"idempotency key: 1 to {MAX_KEY_CHARS} characters", "Idempotency-Key")
        digest = hashlib.sha256(json.dumps(
            {"case_id": case_id, "items": [i.model_dump() for i in body.items], "final_claim": body.final_claim,
             "amends": body.amends}, sort_keys=True, ensure_ascii=True).encode()).hexdigest()

        def replay():
            prior = store.decision_by_key(key) if key else None
            if prior is None:
                return None
            if prior["case_id"] != case_id or prior["user_id"] != user["id"]:
                raise Fail(409, "idempotency key already used for another decision", "Idempotency-Key")
            if prior.pop("request_sha256") not in (None, digest):
                raise Fail(422, "idempotency key already used with a different request body", "Idempotency-Key")
            return JSONResponse(prior, status_code=200)

        done = replay()
        if done is not None:
            return done
        c = store.case(case_id)
        if c is None:
            raise Fail(404, "not found")
        sug = store.latest_suggestion(case_id)
        items, claim = final_claim([i.model_dump(exclude_none=True) for i in body.items], sug, settings.rules)
        claim = settings.rules.claim(claim)
        if body.final_claim is not None:  # the coder's own wording: same codes as the items, valid schema
            claim = settings.rules.matching_claim(body.final_claim, claim)
        try:
            d = store.add_decision(case_id, user["id"], items, claim, suggestion_id=sug["id"] if sug else None,
                                   amends_id=body.amends, model=sug["model"] if sug else engine.model_id,
                                   bundle_digest=sug["bundle_digest"] if sug else engine.bundle_digest,
                                   client_key=key, request_sha256=digest if key else None,
                                   lease_s=settings.lease_s)
        except DecisionConflict as e:
            raise Fail(409, str(e), "amends") from None
        except LeaseHeld as e:
            raise Fail(409, str(e), "case") from None
        except store.IntegrityError:  # the same key stored by a concurrent request meanwhile
            done = replay()
            if done is not None:
                return done
            raise Fail(409, "conflicting decision", "amends") from None
        notes.pop(case_id, None)
        metrics.decided(agreement(sug["claim"] if sug else None, claim))
        return JSONResponse(d, status_code=201)

    @app.get(f"{API}/cases/{{case_id}}/decisions", tags=["cases"])
    def case_decisions(case_id: CaseId, user: dict = Depends(auth)):
        if store.case(case_id) is None:
            raise Fail(404, "not found")
        return store.decisions(case_id)

    @app.get(f"{API}/export", tags=["admin"])
    def export(user: dict = Depends(admin)):
        from opclaim.serve.export import export_rows

        rows, report = export_rows(store)
        return {"cases": rows, "agreement": report}

    def validate_batch(raw: bytes):
        """Validate a JSONL batch with opclaim.ingest, the reader of `opclaim data validate` (bytes as
        sent: no line is decoded or re-encoded here, so no line can fail the batch). `claim` is
        optional here (a case without a reference claim); one that is given is validated in full."""
        from opclaim import ingest

        with tempfile.TemporaryDirectory(prefix="opclaim-batch-") as d:
            p = Path(d) / "batch.jsonl"
            p.touch(mode=0o600)
            p.write_bytes(raw)
            try:
                report = ingest.validate(p, require_claim=False)
            except InputError as e:  # the batch as a whole: no records
                raise Fail(422, e.reason, "body") from None
            rows = ingest.reject_rows(report)
        rejected = [{"line": r["line"], "field": r["field"], "defect": r["defect"], "reason": r["reason"],
                     "id": r["id"]} for r in rows if r["action"] == "rejected"]
        flagged = [{"line": r["line"], "field": r["field"], "defect": r["defect"], "reason": r["reason"],
                    "id": r["id"]} for r in rows if r["action"] == "flagged"]
        return report.kept, rejected, flagged

    # ------------------------------------------------------------ the coder page
    def nonce() -> str:
        return secrets.token_urlsafe(18)

    def html(content: str, n: str, status: int = 200, headers=None) -> HTMLResponse:
        csp = (f"default-src 'none'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; connect-src 'self'; "
               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        return HTMLResponse(content, status_code=status, headers={"Content-Security-Policy": csp, **(headers or {})})

    def page_user(request):
        s = _session(request)
        if s is not None:
            request.state.user = s["user"]
        return s

    def same_origin(request) -> bool:
        """Sec-Fetch-Site same-origin/none (or absent), and an Origin, when sent, equal to ours in
        scheme, host and port (`null`, another scheme or port: refused)."""
        site = request.headers.get("sec-fetch-site")  # what the browser says about the initiator
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None:
            return True
        ours = settings.public_origin or (
            f"{'https' if settings.cookie_secure else request.url.scheme}://{request.headers.get('host', '')}")
        theirs = _origin(origin)
        return theirs is not None and theirs == _origin(ours)

    @app.get("/", include_in_schema=False)
    def home(request: Request):
        s = page_user(request)
        n = nonce()
        if s is None:
            return html(page.login(n), n)
        return html(page.queue(n, s["csrf"], s["user"]["name"], store.queue()), n)

    @app.get("/login", include_in_schema=False)
    def login_form():
        n = nonce()
        return html(page.login(n), n)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        from urllib.parse import parse_qs

        n, who = nonce(), client(request)
        if not same_origin(request):
            return html(page.login(n, "request refused"), n, 403)
        form = parse_qs((await request.body())[:MAX_FORM_BYTES].decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        user = store.user_for_token(token) if token else None
        if user is None:  # as the bearer path: counted per address and per token, never against a valid one
            try:
                refuse_bad_token(who, "form " + token)
            except Fail as e:
                msg = "too many failed sign-ins; try later" if e.status == 429 else "sign-in failed"
                return html(page.login(n, msg), n, e.status)
        sid = secrets.token_urlsafe(32)
        sessions[_h(sid)] = {"user": user, "csrf": secrets.token_urlsafe(32),
                             "expires": time.time() + settings.session_ttl_s}
        request.state.user = user
        r = RedirectResponse("/", status_code=303)
        r.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", secure=settings.cookie_secure,
                     max_age=settings.session_ttl_s, path="/")
        return r

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request):
        from urllib.parse import parse_qs

        s = page_user(request)
        form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        if s is not None and hmac.compare_digest((form.get("csrf") or [""])[0], s["csrf"]):
            sessions.pop(_h(request.cookies.get(SESSION_COOKIE, "")), None)
        r = RedirectResponse("/", status_code=303)
        r.delete_cookie(SESSION_COOKIE, path="/")
        return r

    @app.post("/next", include_in_schema=False)
    async def next_page(request: Request):
        from urllib.parse import parse_qs

        s = page_user(request)
        if s is None:
            return RedirectResponse("/", status_code=303)
        form = parse_qs((await request.body())[:MAX_FORM_BYTES].decode("utf-8", "replace"))
        if not same_origin(request) or not hmac.compare_digest((form.get("csrf") or [""])[0], s["csrf"]):
            raise Fail(403, "CSRF token missing or wrong")
        c = store.lease_next(s["user"]["id"], settings.lease_s)
        return RedirectResponse(f"/cases/{c['id']}" if c else "/", status_code=303)

    @app.get("/cases/{case_id}", include_in_schema=False)
    async def case_page(case_id: CaseId, request: Request):
        s = page_user(request)
        if s is None:
            return RedirectResponse("/", status_code=303)
        c = store.case(case_id)
        if c is None:
            raise Fail(404, "not found")
        sug = await suggest_case(case_id)
        note = c["note"] if c["note"] is not None else notes.get(case_id)
        n = nonce()
        return html(page.case(n, s["csrf"], s["user"]["name"], c, note, sug, store.decisions(case_id)), n)

    return app


def _origin(url: str):
    """(scheme, host, port) of an origin, default ports filled in; None for `null` or anything else."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or u.username or u.password or u.path not in ("", "/") \
            or u.query or u.fragment:
        return None
    return (u.scheme, u.hostname.lower(), port or {"http": 80, "https": 443}[u.scheme])


def _h(s: str) -> str:
    import hashlib

    return hashlib.sha256(s.encode()).hexdigest()
