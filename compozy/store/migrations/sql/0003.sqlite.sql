-- Workers claim executions through the database (SQLite).
-- worker_id and lease_expires_at say who runs an execution and until when; claim_count grows
-- by one on every claim and fences each write of a worker (owner and count in the WHERE
-- clause); cancel_requested_at asks the owning worker to stop. The last two indexes serve
-- keyset paging of users and API keys on (created_at, id). ADD COLUMN keeps the rows in place;
-- a CHECK added this way applies to the new column only, so claim_count's is written inline.

-- migrate:up
ALTER TABLE workflow_states ADD COLUMN worker_id TEXT;
ALTER TABLE workflow_states ADD COLUMN lease_expires_at TEXT;
ALTER TABLE workflow_states ADD COLUMN claim_count INTEGER NOT NULL DEFAULT 0
    CONSTRAINT ck_workflow_states_claim_count CHECK (claim_count >= 0);
ALTER TABLE workflow_states ADD COLUMN cancel_requested_at TEXT;

CREATE INDEX ix_workflow_states_claimable ON workflow_states (status, created_at);
CREATE INDEX ix_workflow_states_worker_id ON workflow_states (worker_id);
CREATE INDEX ix_users_created_at ON users (created_at, id);
CREATE INDEX ix_api_keys_user_id_created_at ON api_keys (user_id, created_at, id);

-- migrate:down
DROP INDEX ix_api_keys_user_id_created_at;
DROP INDEX ix_users_created_at;
DROP INDEX ix_workflow_states_worker_id;
DROP INDEX ix_workflow_states_claimable;
ALTER TABLE workflow_states DROP COLUMN cancel_requested_at;
ALTER TABLE workflow_states DROP COLUMN claim_count;
ALTER TABLE workflow_states DROP COLUMN lease_expires_at;
ALTER TABLE workflow_states DROP COLUMN worker_id;
