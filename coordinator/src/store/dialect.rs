//! Everything the store's SQL says differently on SQLite and PostgreSQL: the schema's types,
//! how the schema version is kept, the database's clock, and parameter markers. Queries are
//! written once, in the subset both engines read the same way.

use std::borrow::Cow;

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The schema batches; both lists have one entry per version and the same tables and
    /// columns. Append only: a released entry has already run on someone's database.
    pub(super) fn migrations(self) -> &'static [&'static str] {
        match self {
            Self::Sqlite => SQLITE,
            Self::Postgres => POSTGRES,
        }
    }

    /// The database's clock in Unix milliseconds, as an SQL expression: leases are timed by
    /// the one clock every replica shares, never by the replicas' own.
    pub(super) fn now_ms(self) -> &'static str {
        match self {
            Self::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            // clock_timestamp, not now(): a transaction that waited on a lock sees the time
            // it acts at, not the time it began.
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// What a SELECT appends to hold the rows it read until the transaction ends, against
    /// writers in other transactions. SQLite's write transactions exclude each other anyway.
    pub(super) fn share_lock(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR SHARE",
        }
    }

    /// `sql` with `$N` parameters as this engine reads them (SQLite numbers them `?N`).
    pub(super) fn statement(self, sql: &str) -> Cow<'_, str> {
        match self {
            Self::Postgres => Cow::Borrowed(sql),
            // No query has a `$` anywhere else (no literals with one, no dollar quoting).
            Self::Sqlite => Cow::Owned(sql.replace('$', "?")),
        }
    }
}

/// The schema version this build writes; a database with a higher one came from a newer troop.
#[allow(clippy::cast_possible_truncation)] // A handful of migrations, never 2^32.
pub(super) const LATEST_VERSION: u32 = SQLITE.len() as u32;

/// SQLite's schema batches; entry N takes `PRAGMA user_version` from N to N+1.
pub(super) const SQLITE: &[&str] = &[
    // 1: the audit trail and scheduler state.
    r"
    CREATE TABLE runs (
        id             INTEGER PRIMARY KEY,
        campaign       TEXT    NOT NULL,
        file_sha256    TEXT    NOT NULL,
        -- Decimal text: SQLite integers are i64 and a u64 seed must round-trip exactly.
        seed           TEXT    NOT NULL,
        dry_run        INTEGER NOT NULL,
        status         TEXT    NOT NULL DEFAULT 'running',
        reason         TEXT    NOT NULL DEFAULT '',
        started_at_ms  INTEGER NOT NULL,
        finished_at_ms INTEGER
    );
    CREATE INDEX runs_by_status ON runs (status);

    CREATE TABLE steps (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runs (id),
        step_index  INTEGER NOT NULL,
        description TEXT    NOT NULL,
        at_ms       INTEGER NOT NULL
    );
    CREATE INDEX steps_by_run ON steps (run_id);

    CREATE TABLE commands (
        id               INTEGER PRIMARY KEY,
        run_id           INTEGER NOT NULL REFERENCES runs (id),
        step_id          INTEGER REFERENCES steps (id),
        target           TEXT    NOT NULL,
        command_id       TEXT    NOT NULL,
        fault_kind       TEXT    NOT NULL,
        parameters       TEXT    NOT NULL,
        signature_sha256 TEXT    NOT NULL,
        sent_at_ms       INTEGER NOT NULL,
        outcome          TEXT    NOT NULL DEFAULT 'pending',
        code             TEXT,
        message          TEXT    NOT NULL DEFAULT '',
        answered_at_ms   INTEGER
    );
    CREATE INDEX commands_by_run ON commands (run_id);
    CREATE INDEX commands_by_command_id ON commands (command_id);

    CREATE TABLE probes (
        id     INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id),
        probe  TEXT    NOT NULL,
        ok     INTEGER NOT NULL,
        detail TEXT    NOT NULL,
        at_ms  INTEGER NOT NULL
    );
    CREATE INDEX probes_by_run ON probes (run_id);

    CREATE TABLE last_strikes (
        campaign   TEXT    NOT NULL,
        group_name TEXT    NOT NULL,
        at_ms      INTEGER NOT NULL,
        PRIMARY KEY (campaign, group_name)
    ) WITHOUT ROWID;

    CREATE TABLE last_runs (
        campaign TEXT    PRIMARY KEY,
        at_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 2: ad-hoc attacks and halts are runs too; who ran them, and the key that signed.
    r"
    ALTER TABLE runs ADD COLUMN operator TEXT NOT NULL DEFAULT '';
    ALTER TABLE commands ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
    ",
    // 3: who used `troop serve`'s operator API or tried to attach a stream, allowed or not.
    r"
    CREATE TABLE access (
        id      INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        caller  TEXT    NOT NULL,
        call    TEXT    NOT NULL,
        allowed INTEGER NOT NULL,
        detail  TEXT    NOT NULL
    );
    ",
    // 4: serve's emergency-stop latch (one row while latched); the stop and the resume
    // themselves are ad-hoc runs, their commands each agent's acknowledgement.
    r"
    CREATE TABLE latch (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        by_name  TEXT    NOT NULL,
        reason   TEXT    NOT NULL,
        at_ms    INTEGER NOT NULL,
        run_id   INTEGER NOT NULL REFERENCES runs (id)
    );
    ",
    // 5: which `troop serve` fires schedules, and since which epoch (see `Lease`); the
    // epoch a scheduled run was begun under (NULL for others); what retention prunes by.
    r"
    CREATE TABLE leader_lease (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        holder        TEXT    NOT NULL,
        epoch         INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    ALTER TABLE runs ADD COLUMN leader_epoch INTEGER;
    CREATE INDEX probes_by_time ON probes (at_ms);
    CREATE INDEX access_by_time ON access (at_ms);
    ",
    // 6: which replica holds each agent's stream, so the others relay through it; which
    // replicas are alive, and which one began each run (its own to close if it died).
    r"
    CREATE TABLE agent_streams (
        agent              TEXT    PRIMARY KEY,
        replica            TEXT    NOT NULL,
        relay              TEXT    NOT NULL,
        labels             TEXT    NOT NULL,
        address            TEXT    NOT NULL,
        connected_since_ms INTEGER NOT NULL,
        seen_at_ms         INTEGER NOT NULL
    );
    CREATE TABLE replicas (
        name       TEXT    PRIMARY KEY,
        seen_at_ms INTEGER NOT NULL
    );
    ALTER TABLE runs ADD COLUMN replica TEXT NOT NULL DEFAULT '';
    ",
    // 7: enrolment: join tokens (by their hash only), the agent certificates serve issued,
    // and revoked names (a certificate for one is refused unless issued after its revocation).
    r"
    CREATE TABLE join_tokens (
        token_sha256  TEXT    PRIMARY KEY,
        agent_id      TEXT,
        labels        TEXT    NOT NULL,
        uses_left     INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        created_by    TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE certificates (
        serial       TEXT    PRIMARY KEY,
        name         TEXT    NOT NULL,
        not_after_ms INTEGER NOT NULL,
        issued_at_ms INTEGER NOT NULL
    );
    CREATE INDEX certificates_by_name ON certificates (name);
    CREATE TABLE revocations (
        name          TEXT    PRIMARY KEY,
        revoked_at_ms INTEGER NOT NULL,
        revoked_by    TEXT    NOT NULL
    );
    ",
    // 8: signing-key rotations: each generation's trusted public keys (hex, comma-separated),
    // the key file serve signs commands with, and the one that signs the announcement.
    r"
    CREATE TABLE signing_keys (
        generation    INTEGER PRIMARY KEY,
        public_keys   TEXT    NOT NULL,
        signer        TEXT    NOT NULL,
        announcer     TEXT    NOT NULL,
        created_by    TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    ",
];

/// PostgreSQL's schema batches, version for version the same tables as `SQLITE`: BIGINT for
/// every integer, BOOLEAN for flags, identity columns for ids. The version is kept in
/// `troop_schema` (created by `postgresql::migrate`).
pub(super) const POSTGRES: &[&str] = &[
    // 1: the audit trail and scheduler state.
    r"
    CREATE TABLE runs (
        id             BIGINT  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        campaign       TEXT    NOT NULL,
        file_sha256    TEXT    NOT NULL,
        seed           TEXT    NOT NULL,
        dry_run        BOOLEAN NOT NULL,
        status         TEXT    NOT NULL DEFAULT 'running',
        reason         TEXT    NOT NULL DEFAULT '',
        started_at_ms  BIGINT  NOT NULL,
        finished_at_ms BIGINT
    );
    CREATE INDEX runs_by_status ON runs (status);

    CREATE TABLE steps (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        run_id      BIGINT NOT NULL REFERENCES runs (id),
        step_index  BIGINT NOT NULL,
        description TEXT   NOT NULL,
        at_ms       BIGINT NOT NULL
    );
    CREATE INDEX steps_by_run ON steps (run_id);

    CREATE TABLE commands (
        id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        run_id           BIGINT NOT NULL REFERENCES runs (id),
        step_id          BIGINT REFERENCES steps (id),
        target           TEXT   NOT NULL,
        command_id       TEXT   NOT NULL,
        fault_kind       TEXT   NOT NULL,
        parameters       TEXT   NOT NULL,
        signature_sha256 TEXT   NOT NULL,
        sent_at_ms       BIGINT NOT NULL,
        outcome          TEXT   NOT NULL DEFAULT 'pending',
        code             TEXT,
        message          TEXT   NOT NULL DEFAULT '',
        answered_at_ms   BIGINT
    );
    CREATE INDEX commands_by_run ON commands (run_id);
    CREATE INDEX commands_by_command_id ON commands (command_id);

    CREATE TABLE probes (
        id     BIGINT  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        run_id BIGINT  NOT NULL REFERENCES runs (id),
        probe  TEXT    NOT NULL,
        ok     BOOLEAN NOT NULL,
        detail TEXT    NOT NULL,
        at_ms  BIGINT  NOT NULL
    );
    CREATE INDEX probes_by_run ON probes (run_id);

    CREATE TABLE last_strikes (
        campaign   TEXT   NOT NULL,
        group_name TEXT   NOT NULL,
        at_ms      BIGINT NOT NULL,
        PRIMARY KEY (campaign, group_name)
    );

    CREATE TABLE last_runs (
        campaign TEXT   PRIMARY KEY,
        at_ms    BIGINT NOT NULL
    );
    ",
    // 2: who ran an ad-hoc run, and the key that signed.
    r"
    ALTER TABLE runs ADD COLUMN operator TEXT NOT NULL DEFAULT '';
    ALTER TABLE commands ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
    ",
    // 3: calls to the operator API and stream attaches, allowed or not.
    r"
    CREATE TABLE access (
        id      BIGINT  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at_ms   BIGINT  NOT NULL,
        caller  TEXT    NOT NULL,
        call    TEXT    NOT NULL,
        allowed BOOLEAN NOT NULL,
        detail  TEXT    NOT NULL
    );
    ",
    // 4: the emergency-stop latch.
    r"
    CREATE TABLE latch (
        id      BIGINT PRIMARY KEY CHECK (id = 1),
        by_name TEXT   NOT NULL,
        reason  TEXT   NOT NULL,
        at_ms   BIGINT NOT NULL,
        run_id  BIGINT NOT NULL REFERENCES runs (id)
    );
    ",
    // 5: the leader lease, a run's epoch, and what retention prunes by.
    r"
    CREATE TABLE leader_lease (
        id            BIGINT PRIMARY KEY CHECK (id = 1),
        holder        TEXT   NOT NULL,
        epoch         BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );
    ALTER TABLE runs ADD COLUMN leader_epoch BIGINT;
    CREATE INDEX probes_by_time ON probes (at_ms);
    CREATE INDEX access_by_time ON access (at_ms);
    ",
    // 6: where agents' streams are, which replicas are alive, who began each run.
    r"
    CREATE TABLE agent_streams (
        agent              TEXT    PRIMARY KEY,
        replica            TEXT    NOT NULL,
        relay              TEXT    NOT NULL,
        labels             TEXT    NOT NULL,
        address            TEXT    NOT NULL,
        connected_since_ms BIGINT  NOT NULL,
        seen_at_ms         BIGINT  NOT NULL
    );
    CREATE TABLE replicas (
        name       TEXT   PRIMARY KEY,
        seen_at_ms BIGINT NOT NULL
    );
    ALTER TABLE runs ADD COLUMN replica TEXT NOT NULL DEFAULT '';
    ",
    // 7: join tokens, issued agent certificates, revoked names.
    r"
    CREATE TABLE join_tokens (
        token_sha256  TEXT    PRIMARY KEY,
        agent_id      TEXT,
        labels        TEXT    NOT NULL,
        uses_left     BIGINT  NOT NULL,
        expires_at_ms BIGINT  NOT NULL,
        created_by    TEXT    NOT NULL,
        created_at_ms BIGINT  NOT NULL
    );
    CREATE TABLE certificates (
        serial       TEXT    PRIMARY KEY,
        name         TEXT    NOT NULL,
        not_after_ms BIGINT  NOT NULL,
        issued_at_ms BIGINT  NOT NULL
    );
    CREATE INDEX certificates_by_name ON certificates (name);
    CREATE TABLE revocations (
        name          TEXT    PRIMARY KEY,
        revoked_at_ms BIGINT  NOT NULL,
        revoked_by    TEXT    NOT NULL
    );
    ",
    // 8: signing-key rotations.
    r"
    CREATE TABLE signing_keys (
        generation    BIGINT  PRIMARY KEY,
        public_keys   TEXT    NOT NULL,
        signer        TEXT    NOT NULL,
        announcer     TEXT    NOT NULL,
        created_by    TEXT    NOT NULL,
        created_at_ms BIGINT  NOT NULL
    );
    ",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_engines_have_every_version() {
        assert_eq!(SQLITE.len(), POSTGRES.len());
    }

    #[test]
    fn parameters_are_renumbered_for_sqlite_only() {
        let sql = "UPDATE runs SET status = $2 WHERE id = $1";
        assert_eq!(
            Dialect::Sqlite.statement(sql),
            "UPDATE runs SET status = ?2 WHERE id = ?1"
        );
        assert_eq!(Dialect::Postgres.statement(sql), sql);
    }
}
