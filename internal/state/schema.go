package state

// migrations are applied in order, each once; schema_version holds how many
// have been applied. Append only: never edit or reorder a released entry.
var migrations = []string{
	// 1: accounts, keys, runs and their output.
	`
CREATE TABLE accounts (
	name    TEXT PRIMARY KEY,
	created INTEGER NOT NULL
);

CREATE TABLE keys (
	id          TEXT PRIMARY KEY,
	account     TEXT NOT NULL REFERENCES accounts(name),
	secret_hash BLOB NOT NULL,
	label       TEXT NOT NULL DEFAULT '',
	created     INTEGER NOT NULL,
	last_used   INTEGER,
	revoked_at  INTEGER
);
CREATE INDEX keys_account ON keys(account);

CREATE TABLE runs (
	id           TEXT PRIMARY KEY,
	account      TEXT NOT NULL REFERENCES accounts(name),
	function     TEXT NOT NULL,
	machine_type TEXT NOT NULL DEFAULT '',
	env_key      TEXT NOT NULL DEFAULT '',
	queued_at    INTEGER NOT NULL,
	started_at   INTEGER,
	finished_at  INTEGER,
	outcome      TEXT NOT NULL DEFAULT '',
	exit_status  INTEGER,
	worker_id    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_account_queued ON runs(account, queued_at);
CREATE INDEX runs_finished ON runs(finished_at);

CREATE TABLE run_logs (
	run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
	seq    INTEGER NOT NULL,
	stream TEXT NOT NULL,
	at     INTEGER NOT NULL,
	data   BLOB NOT NULL,
	PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
`,
	// 2: secrets, sealed by the server (the key is never in this file).
	`
CREATE TABLE secrets (
	account TEXT NOT NULL REFERENCES accounts(name),
	name    TEXT NOT NULL,
	sealed  BLOB NOT NULL,
	updated INTEGER NOT NULL,
	PRIMARY KEY (account, name)
) WITHOUT ROWID;
`,
	// 3: a run is one attempt of a call: the call's id (its first run's)
	// and the attempt's number.
	`
ALTER TABLE runs ADD COLUMN call_id TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
`,
}
