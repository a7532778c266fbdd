-- Users and API keys (PostgreSQL). Emails are unique by email_key, a case-folded form computed
-- in Python, so uniqueness does not depend on a database collation.

-- migrate:up
CREATE TABLE users (
    id         TEXT COLLATE "C" NOT NULL,
    email      TEXT NOT NULL,
    email_key  TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_email_key UNIQUE (email_key),
    CONSTRAINT ck_users_role CHECK (role IN ('admin', 'user'))
);

CREATE INDEX ix_users_role ON users (role);

CREATE TABLE api_keys (
    id          TEXT COLLATE "C" NOT NULL,
    user_id     TEXT COLLATE "C" NOT NULL,
    prefix      TEXT NOT NULL,
    hash        BYTEA NOT NULL,
    fingerprint BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    last_used   TIMESTAMPTZ,
    CONSTRAINT pk_api_keys PRIMARY KEY (id),
    CONSTRAINT fk_api_keys_user_id FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT uq_api_keys_prefix UNIQUE (prefix),
    CONSTRAINT uq_api_keys_fingerprint UNIQUE (fingerprint)
);

CREATE INDEX ix_api_keys_user_id ON api_keys (user_id);

-- migrate:down
DROP TABLE api_keys;
DROP TABLE users;
