-- Indexes in the order the hot reads ask for rows (PostgreSQL).
-- Each list reads newest or oldest first on (created_at, id): an index holding the filter
-- columns, then created_at, then the id, gives a page without sorting and a keyset cursor as a
-- range of it, whatever the table holds. So the task indexes of an execution and of a parent
-- end with task_exec_id, the executions' indexes by status and by workflow_id end with
-- workflow_exec_id, and a new one serves a list filtered by both. ix_workflow_states_status
-- was a prefix of ix_workflow_states_claimable, so it only cost writes.

-- migrate:up
DROP INDEX ix_workflow_states_status;
DROP INDEX ix_workflow_states_claimable;
CREATE INDEX ix_workflow_states_claimable
    ON workflow_states (status, created_at, workflow_exec_id);
DROP INDEX ix_workflow_states_workflow_id_created_at;
CREATE INDEX ix_workflow_states_workflow_id_created_at
    ON workflow_states (workflow_id, created_at, workflow_exec_id);
CREATE INDEX ix_workflow_states_workflow_id_status_created_at
    ON workflow_states (workflow_id, status, created_at, workflow_exec_id);
DROP INDEX ix_task_states_workflow_exec_id_created_at;
CREATE INDEX ix_task_states_workflow_exec_id_created_at
    ON task_states (workflow_exec_id, created_at, task_exec_id);
DROP INDEX ix_task_states_parent_state_id_created_at;
CREATE INDEX ix_task_states_parent_state_id_created_at
    ON task_states (parent_state_id, created_at, task_exec_id);

-- migrate:down
DROP INDEX ix_task_states_parent_state_id_created_at;
CREATE INDEX ix_task_states_parent_state_id_created_at ON task_states (parent_state_id, created_at);
DROP INDEX ix_task_states_workflow_exec_id_created_at;
CREATE INDEX ix_task_states_workflow_exec_id_created_at ON task_states (workflow_exec_id, created_at);
DROP INDEX ix_workflow_states_workflow_id_status_created_at;
DROP INDEX ix_workflow_states_workflow_id_created_at;
CREATE INDEX ix_workflow_states_workflow_id_created_at ON workflow_states (workflow_id, created_at);
DROP INDEX ix_workflow_states_claimable;
CREATE INDEX ix_workflow_states_claimable ON workflow_states (status, created_at);
CREATE INDEX ix_workflow_states_status ON workflow_states (status);
