-- Users and API keys (SQLite). Emails are unique by email_key, a case-folded form computed in
-- Python, so uniqueness does not depend on a database collation.

-- migrate:up
CREATE TABLE users (
    id         TEXT NOT NULL,
    email      TEXT NOT NULL,
    email_key  TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_email_key UNIQUE (email_key),
    CONSTRAINT ck_users_role CHECK (role IN ('admin', 'user'))
) STRICT;

CREATE INDEX ix_users_role ON users (role);

CREATE TABLE api_keys (
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    hash        BLOB NOT NULL,
    fingerprint BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    last_used   TEXT,
    CONSTRAINT pk_api_keys PRIMARY KEY (id),
    CONSTRAINT fk_api_keys_user_id FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT uq_api_keys_prefix UNIQUE (prefix),
    CONSTRAINT uq_api_keys_fingerprint UNIQUE (fingerprint)
) STRICT;

CREATE INDEX ix_api_keys_user_id ON api_keys (user_id);

-- migrate:down
DROP TABLE api_keys;
DROP TABLE users;
