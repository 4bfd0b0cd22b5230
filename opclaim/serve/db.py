"""Storage: SQLite (the embedded default) or PostgreSQL, schema migrations versioned in code.

`--db` is a file path or `sqlite:///FILE` (stdlib sqlite3: WAL, foreign keys, synchronous=FULL),
or a `postgresql://` URL (psycopg 3, the `postgres` extra; password from `~/.pgpass` or PGPASSWORD,
never from the command line). Every statement is written once, in plain SQL with `?` parameters
(rewritten to psycopg's `%s`), `INSERT ... RETURNING id`, TEXT/INTEGER columns, JSON as TEXT and
times as ISO-8601 UTC TEXT. What differs per database is confined to `_DIALECTS`: the id column,
the float type, and the triggers that make decisions append-only.

Tables: users (token stored as sha256), cases (note text only with store_notes), suggestions,
decisions (append-only: an amendment is a new row whose `amends_id` names the one it amends;
each row has user, time, model and bundle digest; `client_key` makes a retried POST idempotent).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from pathlib import Path

from opclaim.errors import InputError

ROLES = ("coder", "admin")

_APPEND_ONLY = "decisions are append-only"
_DIALECTS = {
    "sqlite": {"id": "INTEGER PRIMARY KEY", "ref": "INTEGER", "real": "REAL", "append_only": [
        f"""CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
           BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
        f"""CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
           BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"""],
        # REPLACE (INSERT OR REPLACE, REPLACE INTO, an UPSERT's conflict) deletes the old row without
        # firing the delete trigger (recursive_triggers is off by default): refuse an insert that
        # would collide with a stored row on any unique column, before the conflict is resolved.
        "no_replace": [
        f"""CREATE TRIGGER decisions_no_replace BEFORE INSERT ON decisions
           WHEN EXISTS (SELECT 1 FROM decisions WHERE id = NEW.id OR amends_id = NEW.amends_id
                        OR client_key = NEW.client_key)
           BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"""]},
    "postgresql": {"id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "ref": "BIGINT",
                   "real": "DOUBLE PRECISION", "no_replace": [], "append_only": [
        f"""CREATE FUNCTION opclaim_append_only() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$""",
        """CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
           FOR EACH ROW EXECUTE FUNCTION opclaim_append_only()""",
        """CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
           FOR EACH ROW EXECUTE FUNCTION opclaim_append_only()""",
        """CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions
           FOR EACH STATEMENT EXECUTE FUNCTION opclaim_append_only()"""]},
}


def migrations(dialect: str = "sqlite") -> list[list[str]]:
    """Append-only: each entry is one schema version; never edit an applied one, add the next."""
    d = _DIALECTS[dialect]
    return [
        [  # 1: the first schema
            f"""CREATE TABLE users (
                id {d['id']},
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL CHECK (role IN ('coder', 'admin')),
                token_sha256 TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                disabled INTEGER NOT NULL DEFAULT 0)""",
            f"""CREATE TABLE cases (
                id {d['id']},
                external_id TEXT NOT NULL UNIQUE,
                service TEXT,
                encounter_date TEXT,
                patient TEXT,
                note TEXT,
                note_sha256 TEXT NOT NULL,
                reference_claim TEXT,
                status TEXT NOT NULL CHECK (status IN ('queued', 'suggested', 'decided')),
                leased_by {d['ref']} REFERENCES users(id),
                leased_at TEXT,
                created_by {d['ref']} REFERENCES users(id),
                created_at TEXT NOT NULL)""",
            f"""CREATE TABLE suggestions (
                id {d['id']},
                case_id {d['ref']} NOT NULL REFERENCES cases(id),
                claim TEXT NOT NULL,
                codes TEXT NOT NULL,
                flags TEXT NOT NULL,
                model TEXT NOT NULL,
                bundle_digest TEXT,
                latency_s {d['real']} NOT NULL,
                created_at TEXT NOT NULL)""",
            f"""CREATE TABLE decisions (
                id {d['id']},
                case_id {d['ref']} NOT NULL REFERENCES cases(id),
                suggestion_id {d['ref']} REFERENCES suggestions(id),
                amends_id {d['ref']} UNIQUE REFERENCES decisions(id),
                user_id {d['ref']} NOT NULL REFERENCES users(id),
                items TEXT NOT NULL,
                final_claim TEXT NOT NULL,
                model TEXT,
                bundle_digest TEXT,
                client_key TEXT UNIQUE,
                created_at TEXT NOT NULL)""",
            "CREATE INDEX cases_status ON cases (status, id)",
            "CREATE INDEX suggestions_case ON suggestions (case_id, id)",
            "CREATE INDEX decisions_case ON decisions (case_id, id)",
            *d["append_only"],  # the audit trail cannot be rewritten through this database
        ],
        [  # 2: no REPLACE hole in the append-only rule; the request hash of an idempotent decision
            *d["no_replace"],
            "ALTER TABLE decisions ADD COLUMN request_sha256 TEXT",
        ],
    ]


MIGRATIONS = migrations("sqlite")
SCHEMA_VERSION = len(MIGRATIONS)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def db_path(url: str | Path) -> Path:
    """The SQLite file of a path or sqlite:///path (see `dialect_of` for the other URLs)."""
    s = str(url)
    if s.startswith("sqlite:///"):
        return Path(s[len("sqlite:///"):])
    if "://" in s:
        raise InputError("database URL: a file path, sqlite:///FILE or postgresql://...", field="--db")
    return Path(s)


def dialect_of(url: str | Path) -> str:
    s = str(url)
    if s.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    db_path(s)  # refuses other schemes
    return "sqlite"


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    if u.password is None:
        return url
    host = f"{u.username}:***@{u.hostname or ''}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, host, u.path, u.query, u.fragment))


class _PgConnection:
    """psycopg behind the sqlite3 calls the Store makes: `?` parameters become `%s`, rows are
    mappings (row["col"], row[0] for the first column), cursors have fetchall/fetchone/rowcount.
    Written here because the Store needs only these four calls: an ORM would be more code."""

    def __init__(self, url: str):
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise InputError("a postgresql:// database needs psycopg: pip install 'opclaim[postgres]'",
                             field="--db") from None
        try:
            self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        except psycopg.Error as e:
            raise InputError(f"cannot connect to {safe_url(url)}: {type(e).__name__}", field="--db") from None
        self.IntegrityError = psycopg.IntegrityError

    def execute(self, sql: str, args=()):
        if not args:  # no parameters: psycopg leaves the text alone (a literal % stays %)
            return _PgCursor(self.conn.execute(sql))
        return _PgCursor(self.conn.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(args)))

    def close(self) -> None:
        self.conn.close()


class _PgCursor:
    def __init__(self, cur):
        self.cur, self.rowcount = cur, cur.rowcount

    def fetchone(self):
        r = self.cur.fetchone()
        return _PgRow(r) if r is not None else None

    def fetchall(self):
        return [_PgRow(r) for r in self.cur.fetchall()]


class _PgRow(dict):
    """A dict row that also answers row[0], like sqlite3.Row."""

    def __getitem__(self, k):
        return list(self.values())[k] if isinstance(k, int) else super().__getitem__(k)


class DecisionConflict(Exception):
    """The decision does not extend the case's chain (decide twice, or amend a stale row)."""


class LeaseHeld(Exception):
    """Another user holds the case under a live lease (from `POST /v1/cases/next`)."""


def _cutoff(lease_s: int) -> str:
    """Leases taken before this time have lapsed."""
    return (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=lease_s)).isoformat(timespec="milliseconds")


class Store:
    """One connection shared by the server's threads behind a lock: SQLite serialises writers
    anyway, and it keeps transactions simple."""

    def __init__(self, url: str | Path, *, store_notes: bool = False):
        self.dialect = dialect_of(url)
        self.store_notes = store_notes
        self.lock = threading.RLock()
        if self.dialect == "postgresql":
            self.path = safe_url(str(url))
            self.conn = _PgConnection(str(url))
            self.IntegrityError = self.conn.IntegrityError
            self._begin = "BEGIN"
            self.migrate()
            return
        self.path = db_path(url)
        self.IntegrityError = sqlite3.IntegrityError
        self._begin = "BEGIN IMMEDIATE"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # create owner-only before SQLite writes a byte
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=FULL", "busy_timeout=5000"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.migrate()
        for side in ("-wal", "-shm"):  # WAL files hold the same data (SQLite copies the mode; make sure)
            p = self.path.with_name(self.path.name + side)
            if p.exists():
                os.chmod(p, 0o600)

    # ------------------------------------------------------------ plumbing
    def _tx(self):
        store = self

        class _T:
            def __enter__(self):
                store.lock.acquire()
                try:
                    store.conn.execute(store._begin)
                except BaseException:
                    store.lock.release()
                    raise
                return store.conn

            def __exit__(self, et, ev, tb):
                try:
                    store.conn.execute("COMMIT" if et is None else "ROLLBACK")
                finally:
                    store.lock.release()
                return False

        return _T()

    def query(self, sql: str, args=()) -> list:
        with self.lock:
            return self.conn.execute(sql, args).fetchall()

    def version(self) -> int:
        with self.lock:
            self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, "
                              "applied_at TEXT NOT NULL)")
            row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0] or 0)

    def migrate(self) -> int:
        have = self.version()
        if have > SCHEMA_VERSION:
            raise InputError(f"database schema version {have} is newer than this opclaim ({SCHEMA_VERSION})",
                             file=self.path)
        steps = migrations(self.dialect)
        for v in range(have + 1, SCHEMA_VERSION + 1):
            with self._tx() as c:
                for stmt in steps[v - 1]:
                    c.execute(stmt)
                c.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (v, now()))
        return SCHEMA_VERSION

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # ------------------------------------------------------------ users
    def add_user(self, name: str, role: str) -> str:
        """Create a user; returns the token (shown once, stored only as its sha256)."""
        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}", field="--role")
        if not name or len(name) > 100 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise InputError("user name: letters, digits, '.', '-', '_' (at most 100)", field="NAME")
        token = "ocl_" + secrets.token_urlsafe(32)
        try:
            with self._tx() as c:
                c.execute("INSERT INTO users (name, role, token_sha256, created_at) VALUES (?, ?, ?, ?)",
                          (name, role, hash_token(token), now()))
        except self.IntegrityError:
            raise InputError("a user of that name exists", field="NAME") from None
        return token

    def disable_user(self, name: str) -> None:
        with self._tx() as c:
            if c.execute("UPDATE users SET disabled = 1 WHERE name = ?", (name,)).rowcount != 1:
                raise InputError("no such user", field="NAME")

    def user_for_token(self, token: str) -> dict | None:
        h = hash_token(token)
        rows = self.query("SELECT id, name, role, token_sha256 FROM users WHERE token_sha256 = ? AND disabled = 0",
                          (h,))
        if rows and hmac.compare_digest(rows[0]["token_sha256"], h):
            return {"id": rows[0]["id"], "name": rows[0]["name"], "role": rows[0]["role"]}
        return None

    # ------------------------------------------------------------ cases
    def add_cases(self, cases, user_id: int | None) -> tuple[list[dict], list[dict]]:
        """Insert validated Case objects; (inserted [{id, external_id}], duplicates [{external_id}])."""
        added, dups = [], []
        with self._tx() as c:
            for case in cases:
                if c.execute("SELECT 1 FROM cases WHERE external_id = ?", (case.id,)).fetchone():
                    dups.append({"external_id": case.id})
                    continue
                ref = case.claim.to_dict() if case.claim is not None else None
                cur = c.execute(
                    "INSERT INTO cases (external_id, service, encounter_date, patient, note, note_sha256, "
                    "reference_claim, status, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?) "
                    "RETURNING id",
                    (case.id, case.service, case.date, json.dumps(getattr(case, "patient", None)),
                     case.note if self.store_notes else None, hash_token(case.note),
                     json.dumps(ref) if ref else None, user_id, now()))
                added.append({"id": cur.fetchall()[0]["id"], "external_id": case.id})
        return added, dups

    def case(self, case_id: int) -> dict | None:
        rows = self.query("SELECT * FROM cases WHERE id = ?", (case_id,))
        return _case_dict(rows[0]) if rows else None

    def queue(self, limit: int = 200) -> list[dict]:
        return [_case_dict(r) for r in self.query(
            "SELECT * FROM cases WHERE status <> 'decided' ORDER BY id LIMIT ?", (limit,))]

    def queue_depth(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM cases WHERE status <> 'decided'")[0][0])

    def lease_next(self, user_id: int, lease_s: int = 900) -> dict | None:
        """The oldest undecided case nobody else holds (a lease lapses after lease_s)."""
        with self._tx() as c:
            row = c.execute("SELECT * FROM cases WHERE status <> 'decided' AND (leased_by IS NULL OR leased_by = ? "
                            "OR leased_at < ?) ORDER BY id LIMIT 1", (user_id, _cutoff(lease_s))).fetchone()
            if row is None:
                return None
            c.execute("UPDATE cases SET leased_by = ?, leased_at = ? WHERE id = ?", (user_id, now(), row["id"]))
        return self.case(row["id"])

    # ------------------------------------------------------------ suggestions
    def add_suggestion(self, case_id: int, s, model: str, bundle_digest: str | None) -> int:
        with self._tx() as c:
            cur = c.execute("INSERT INTO suggestions (case_id, claim, codes, flags, model, bundle_digest, latency_s, "
                            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                            (case_id, json.dumps(s.claim), json.dumps(s.codes), json.dumps(s.flags), model,
                             bundle_digest, s.latency_s, now()))
            sid = cur.fetchall()[0]["id"]
            c.execute("UPDATE cases SET status = 'suggested' WHERE id = ? AND status = 'queued'", (case_id,))
            return sid

    def latest_suggestion(self, case_id: int) -> dict | None:
        rows = self.query("SELECT * FROM suggestions WHERE case_id = ? ORDER BY id DESC LIMIT 1", (case_id,))
        if not rows:
            return None
        r = rows[0]
        return {"id": r["id"], "claim": json.loads(r["claim"]), "codes": json.loads(r["codes"]),
                "flags": json.loads(r["flags"]), "model": r["model"], "bundle_digest": r["bundle_digest"],
                "latency_s": r["latency_s"], "created_at": r["created_at"]}

    # ------------------------------------------------------------ decisions
    def decision_by_key(self, client_key: str) -> dict | None:
        """The decision stored under an idempotency key, with its user name and request hash."""
        rows = self.query("SELECT d.*, u.name AS user_name FROM decisions d JOIN users u ON u.id = d.user_id "
                          "WHERE d.client_key = ?", (client_key,))
        if not rows:
            return None
        d = _decision_dict(rows[0])
        d["request_sha256"] = rows[0]["request_sha256"]
        return d

    def add_decision(self, case_id: int, user_id: int, items: list, final_claim: dict, *, suggestion_id=None,
                     amends_id=None, model=None, bundle_digest=None, client_key=None, request_sha256=None,
                     lease_s: int | None = None) -> dict:
        """Append a decision. The first decision of a case has amends_id None; every later one
        must amend the case's latest decision (else DecisionConflict). With lease_s, a case another
        user holds under a live lease is refused (LeaseHeld)."""
        with self._tx() as c:
            if lease_s is not None:
                row = c.execute("SELECT leased_by, leased_at FROM cases WHERE id = ?", (case_id,)).fetchone()
                if row is not None and row["leased_by"] is not None and row["leased_by"] != user_id \
                        and row["leased_at"] >= _cutoff(lease_s):
                    raise LeaseHeld("another coder holds this case; wait for the lease to lapse")
            last = c.execute("SELECT id FROM decisions WHERE case_id = ? ORDER BY id DESC LIMIT 1",
                             (case_id,)).fetchone()
            want = last["id"] if last else None
            if amends_id != want:
                raise DecisionConflict("already decided: amend the latest decision" if want is not None and
                                       amends_id is None else "amends must name the case's latest decision")
            cur = c.execute("INSERT INTO decisions (case_id, suggestion_id, amends_id, user_id, items, final_claim, "
                            "model, bundle_digest, client_key, request_sha256, created_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                            (case_id, suggestion_id, amends_id, user_id, json.dumps(items), json.dumps(final_claim),
                             model, bundle_digest, client_key, request_sha256, now()))
            did = cur.fetchall()[0]["id"]
            c.execute("UPDATE cases SET status = 'decided', leased_by = NULL WHERE id = ?", (case_id,))
        return self.decision(did)

    def decision(self, decision_id: int) -> dict | None:
        rows = self.query("SELECT d.*, u.name AS user_name FROM decisions d JOIN users u ON u.id = d.user_id "
                          "WHERE d.id = ?", (decision_id,))
        return _decision_dict(rows[0]) if rows else None

    def decisions(self, case_id: int) -> list[dict]:
        return [_decision_dict(r) for r in self.query(
            "SELECT d.*, u.name AS user_name FROM decisions d JOIN users u ON u.id = d.user_id WHERE d.case_id = ? "
            "ORDER BY d.id", (case_id,))]

    def final_decisions(self) -> list[dict]:
        """The latest decision of every decided case, with its case (for export)."""
        rows = self.query(
            "SELECT d.*, u.name AS user_name FROM decisions d JOIN users u ON u.id = d.user_id "
            "WHERE d.id = (SELECT MAX(d2.id) FROM decisions d2 WHERE d2.case_id = d.case_id) ORDER BY d.case_id")
        return [_decision_dict(r) for r in rows]


def _case_dict(r) -> dict:
    return {"id": r["id"], "external_id": r["external_id"], "service": r["service"], "date": r["encounter_date"],
            "patient": json.loads(r["patient"]) if r["patient"] else None, "note": r["note"],
            "note_sha256": r["note_sha256"], "status": r["status"],
            "reference_claim": json.loads(r["reference_claim"]) if r["reference_claim"] else None,
            "created_at": r["created_at"]}


def _decision_dict(r) -> dict:
    keys = r.keys()
    return {"id": r["id"], "case_id": r["case_id"], "suggestion_id": r["suggestion_id"], "amends_id": r["amends_id"],
            "user_id": r["user_id"], "user": r["user_name"] if "user_name" in keys else None,
            "items": json.loads(r["items"]), "final_claim": json.loads(r["final_claim"]), "model": r["model"],
            "bundle_digest": r["bundle_digest"], "client_key": r["client_key"], "created_at": r["created_at"]}
