"""The coder page: server-rendered HTML, CSS and JS inline under a per-response nonce.

Everything from the database or the model is HTML-escaped here; data the script needs travels
as JSON in a `type="application/json"` block with `<`, `>` and `&` escaped, so no note or code
text can close a tag or start a script.
"""

from __future__ import annotations

import json
from html import escape

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#f6f6f4}
header{background:#23395d;color:#fff;padding:.5em 1em;display:flex;gap:1em;align-items:center}
header a,header button{color:#fff}
main{padding:1em;max-width:1200px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}
pre.note{white-space:pre-wrap;background:#fff;border:1px solid #ccc;padding:1em;max-height:75vh;overflow:auto}
mark{background:#ffe58a}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
tr.sel{outline:3px solid #2a6fdb}
tr.accept td.act{background:#d8f5d0} tr.reject td.act{background:#f8d4d4} tr.edit td.act{background:#fdf0c4}
tr.add td.act{background:#d4e6f8}
.invalid{color:#a00}
.msg{margin:.5em 0;font-weight:600}
kbd{border:1px solid #999;border-radius:3px;padding:0 .3em;background:#fff}
"""

JS = r"""
(function(){
  const data = JSON.parse(document.getElementById('case-data').textContent);
  const csrf = document.querySelector('meta[name=csrf-token]').content;
  const tbody = document.getElementById('codes');
  const msg = document.getElementById('msg');
  let sel = 0;
  const rows = () => Array.from(tbody.querySelectorAll('tr'));
  function select(i){ const r = rows(); if(!r.length) return; sel = Math.max(0, Math.min(i, r.length-1));
    r.forEach((x, j) => x.classList.toggle('sel', j === sel)); r[sel].focus(); }
  function setAction(tr, action){ tr.dataset.action = action;
    tr.classList.remove('accept','reject','edit','add'); tr.classList.add(action);
    tr.querySelector('td.act').textContent = action; }
  function edit(tr){ const input = tr.querySelector('input.to'); input.hidden = false; input.focus(); setAction(tr, 'edit'); }
  function addRow(){ const tr = document.createElement('tr'); tr.tabIndex = 0; tr.dataset.new = '1';
    const sys = document.createElement('select'); ['icd10','cpt'].forEach(s => { const o = document.createElement('option'); o.value = s; o.textContent = s; sys.appendChild(o); });
    const td0 = document.createElement('td'); td0.appendChild(sys);
    const td1 = document.createElement('td'); const inp = document.createElement('input'); inp.className = 'to'; inp.size = 10; inp.setAttribute('aria-label', 'new code'); td1.appendChild(inp);
    const td2 = document.createElement('td'); td2.colSpan = 3; td2.textContent = 'added by coder';
    const td3 = document.createElement('td'); td3.className = 'act';
    [td0, td1, td2, td3].forEach(t => tr.appendChild(t)); tbody.appendChild(tr); setAction(tr, 'add'); select(rows().length-1); inp.focus(); }
  function items(){ return rows().map(tr => {
      if (tr.dataset.new) return {system: tr.querySelector('select').value, action: 'add', code: tr.querySelector('input.to').value.trim()};
      const it = {system: tr.dataset.system, code: tr.dataset.code, action: tr.dataset.action || ''};
      if (tr.dataset.provider) it.provider = tr.dataset.provider;
      if (it.action === 'edit') it.to = tr.querySelector('input.to').value.trim();
      return it; }); }
  async function submit(){
    const its = items(); const open = its.filter(x => !x.action).length;
    if (open) { msg.textContent = open + ' code(s) still undecided'; return; }
    const body = {items: its}; if (data.amends !== null) body.amends = data.amends;
    const r = await fetch('/v1/cases/' + data.case_id + '/decision', {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify(body)});
    let j = {}; try { j = await r.json(); } catch (e) {}
    if (r.ok) { msg.textContent = 'saved decision ' + j.id; document.body.dataset.saved = String(j.id); }
    else { msg.textContent = 'not saved: ' + (j.error || r.status) + (j.field ? ' (' + j.field + ')' : ''); }
  }
  tbody.addEventListener('click', e => { const tr = e.target.closest('tr'); if (tr) select(rows().indexOf(tr));
    const b = e.target.closest('button[data-act]'); if (b) { if (b.dataset.act === 'edit') edit(tr); else setAction(tr, b.dataset.act); } });
  document.getElementById('submit').addEventListener('click', submit);
  document.getElementById('add').addEventListener('click', addRow);
  document.addEventListener('keydown', e => {
    const typing = e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT';
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); return; }
    if (typing) { if (e.key === 'Enter' || e.key === 'Escape') { e.preventDefault(); select(sel); } return; }
    const tr = rows()[sel];
    if (e.key === 'j' || e.key === 'ArrowDown') { e.preventDefault(); select(sel + 1); }
    else if (e.key === 'k' || e.key === 'ArrowUp') { e.preventDefault(); select(sel - 1); }
    else if (e.key === 'a' && tr && !tr.dataset.new) { setAction(tr, 'accept'); select(sel + 1); }
    else if (e.key === 'r' && tr && !tr.dataset.new) { setAction(tr, 'reject'); select(sel + 1); }
    else if (e.key === 'e' && tr && !tr.dataset.new) { e.preventDefault(); edit(tr); }
    else if (e.key === 'n') { e.preventDefault(); addRow(); }
    else if (e.key === 's') { e.preventDefault(); submit(); }
  });
  select(0);
})();
"""


def _json_block(obj) -> str:
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _layout(title: str, body: str, nonce: str, *, csrf: str | None = None, user: str | None = None,
            script: str = "") -> str:
    head_csrf = f'<meta name="csrf-token" content="{escape(csrf)}">' if csrf else ""
    bar = ""
    if user:
        bar = (f'<header><strong>opclaim</strong><a href="/">queue</a><span>{escape(user)}</span>'
               f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{escape(csrf or "")}">'
               '<button type="submit">log out</button></form></header>')
    js = f'<script nonce="{nonce}">{script}</script>' if script else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="referrer" content="same-origin">{head_csrf}<style nonce="{nonce}">{CSS}</style></head>'
            f'<body>{bar}<main>{body}</main>{js}</body></html>')


def login(nonce: str, error: str | None = None) -> str:
    err = f'<p class="msg invalid">{escape(error)}</p>' if error else ""
    body = (f'<h1>opclaim coder sign-in</h1>{err}<form method="post" action="/login">'
            '<label>Access token <input type="password" name="token" id="token" autocomplete="off" size="50"></label> '
            '<button type="submit" id="login">sign in</button></form>'
            '<p>Tokens come from your administrator (<code>opclaim serve user add</code>).</p>')
    return _layout("opclaim: sign in", body, nonce)


def queue(nonce: str, csrf: str, user: str, cases: list[dict]) -> str:
    rows = "".join(
        f'<tr><td><a href="/cases/{int(c["id"])}">{escape(c["external_id"])}</a></td><td>{escape(c["service"] or "")}</td>'
        f'<td>{escape(c["date"] or "")}</td><td>{escape(c["status"])}</td></tr>' for c in cases)
    body = (f'<h1>Queue ({len(cases)} open)</h1><form method="post" action="/next">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}"><button type="submit" id="next">'
            'open the next case</button></form>'
            f'<table><thead><tr><th>case</th><th>service</th><th>date</th><th>status</th></tr></thead>'
            f'<tbody id="queue">{rows}</tbody></table>')
    return _layout("opclaim: queue", body, nonce, csrf=csrf, user=user)


def highlight(note: str, rows: list[dict]) -> str:
    """The escaped note with each code's evidence spans ({"start", "end"} character offsets,
    when the evidence feature provides them) wrapped in <mark>."""
    spans = []
    for r in rows:
        for ev in r.get("evidence") or []:
            try:
                s, e = int(ev["start"]), int(ev["end"])
            except (KeyError, TypeError, ValueError):
                continue
            if 0 <= s < e <= len(note):
                spans.append((s, e, r["code"]))
    spans.sort()
    out, pos = [], 0
    for s, e, code in spans:
        if s < pos:
            continue  # overlapping spans: the first wins
        out.append(escape(note[pos:s]))
        out.append(f'<mark data-code="{escape(code)}">{escape(note[s:e])}</mark>')
        pos = e
    out.append(escape(note[pos:]))
    return "".join(out)


def _fmt(v) -> str:
    return "" if v is None else escape(str(v))


def case(nonce: str, csrf: str, user: str, c: dict, note: str | None, suggestion: dict | None,
         decisions: list[dict]) -> str:
    rows = (suggestion or {}).get("codes") or []
    trs = []
    for r in rows:
        desc = r.get("description") or ""
        mods = "-".join(r.get("modifiers") or [])
        flag = "" if r.get("valid", True) else ' <span class="invalid">(not billable)</span>'
        trs.append(
            f'<tr tabindex="0" data-system="{escape(r["system"])}" data-code="{escape(r["code"])}"'
            f' data-provider="{escape(r.get("provider") or "")}">'
            f'<td>{escape(r["system"])}</td><td><strong>{escape(r["code"])}</strong>{("-" + escape(mods)) if mods else ""}'
            f'{flag}{("<br>" + escape(r["provider"])) if r.get("provider") else ""}'
            '<br><input class="to" hidden size="10" aria-label="replacement code"></td>'
            f'<td>{escape(desc)}</td><td>{_fmt(r.get("confidence"))}</td><td>{_fmt(r.get("route"))}</td>'
            '<td class="act"></td><td><button type="button" data-act="accept">accept</button>'
            '<button type="button" data-act="reject">reject</button>'
            '<button type="button" data-act="edit">edit</button></td></tr>')
    note_html = (f'<pre class="note" id="note">{highlight(note, rows)}</pre>' if note is not None else
                 '<p id="note">The note text is not stored on this server (see --store-notes) and is no longer '
                 'in memory.</p>')
    hist = "".join(f'<li>decision {int(d["id"])} by {escape(d["user"] or "")} at {escape(d["created_at"])}'
                   f'{" (amends " + str(int(d["amends_id"])) + ")" if d["amends_id"] else ""}</li>' for d in decisions)
    amends = decisions[-1]["id"] if decisions else None
    data = {"case_id": int(c["id"]), "amends": amends}
    flags = ", ".join((suggestion or {}).get("flags") or [])
    body = (
        f'<h1>Case {escape(c["external_id"])}</h1><p>{escape(c["service"] or "")} {escape(c["date"] or "")} '
        f'status: {escape(c["status"])}{(" — model flags: " + escape(flags)) if flags else ""}</p>'
        f'<div class="cols"><section><h2>Note</h2>{note_html}</section><section><h2>Suggested codes</h2>'
        '<table><thead><tr><th>system</th><th>code</th><th>description</th><th>confidence</th><th>route</th>'
        f'<th>decision</th><th></th></tr></thead><tbody id="codes">{"".join(trs)}</tbody></table>'
        '<p><button type="button" id="add">add code (n)</button> <button type="button" id="submit">'
        f'{"amend" if amends else "submit"} (s / Ctrl+Enter)</button></p><p class="msg" id="msg" role="status"></p>'
        '<p>Keys: <kbd>j</kbd>/<kbd>k</kbd> move, <kbd>a</kbd> accept, <kbd>r</kbd> reject, <kbd>e</kbd> edit, '
        '<kbd>n</kbd> add, <kbd>s</kbd> submit.</p>'
        f'<h3>History</h3><ul id="history">{hist or "<li>no decision yet</li>"}</ul></section></div>'
        f'<script type="application/json" id="case-data" nonce="{nonce}">{_json_block(data)}</script>')
    return _layout(f"opclaim: case {c['external_id']}", body, nonce, csrf=csrf, user=user, script=JS)
