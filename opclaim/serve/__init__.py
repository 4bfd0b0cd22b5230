"""`opclaim serve`: an in-enclave HTTP API and coder review page over a (signed) model.

Modules: engine (the ONE adapter onto infer/ and eval/: load, prompts, batched generate,
extraction), batcher (gathers concurrent suggestions into batches on one worker thread), db
(SQLite storage, migrations, users, append-only decisions), app (FastAPI routes, auth, metrics),
page (server-rendered coder page), export (coder-final claims back to training cases).
"""
