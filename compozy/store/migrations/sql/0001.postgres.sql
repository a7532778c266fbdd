-- Workflow and task execution state (PostgreSQL).
-- Ids are TEXT COLLATE "C" so that ordering by id matches SQLite's byte order.

-- migrate:up
CREATE TABLE workflow_states (
    workflow_exec_id TEXT COLLATE "C" NOT NULL,
    workflow_id      TEXT COLLATE "C" NOT NULL,
    status           TEXT NOT NULL,
    usage            JSONB,
    input            JSONB,
    output           JSONB,
    error            JSONB,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT pk_workflow_states PRIMARY KEY (workflow_exec_id),
    CONSTRAINT ck_workflow_states_status CHECK (status IN
        ('PENDING', 'RUNNING', 'SUCCESS', 'FAILED', 'TIMED_OUT', 'CANCELED', 'WAITING', 'PAUSED')),
    CONSTRAINT ck_workflow_states_usage CHECK (usage IS NULL OR jsonb_typeof(usage) = 'array'),
    CONSTRAINT ck_workflow_states_input CHECK (input IS NULL OR jsonb_typeof(input) = 'object'),
    CONSTRAINT ck_workflow_states_output CHECK (output IS NULL OR jsonb_typeof(output) = 'object'),
    CONSTRAINT ck_workflow_states_error CHECK (error IS NULL OR jsonb_typeof(error) = 'object')
);

CREATE INDEX ix_workflow_states_workflow_id_created_at ON workflow_states (workflow_id, created_at);
CREATE INDEX ix_workflow_states_status ON workflow_states (status);
CREATE INDEX ix_workflow_states_created_at ON workflow_states (created_at, workflow_exec_id);

CREATE TABLE task_states (
    task_exec_id     TEXT COLLATE "C" NOT NULL,
    task_id          TEXT COLLATE "C" NOT NULL,
    workflow_id      TEXT COLLATE "C" NOT NULL,
    workflow_exec_id TEXT COLLATE "C" NOT NULL,
    parent_state_id  TEXT COLLATE "C",
    component        TEXT NOT NULL,
    status           TEXT NOT NULL,
    execution_type   TEXT NOT NULL,
    agent_id         TEXT COLLATE "C",
    action_id        TEXT COLLATE "C",
    tool_id          TEXT COLLATE "C",
    usage            JSONB,
    input            JSONB,
    output           JSONB,
    error            JSONB,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT pk_task_states PRIMARY KEY (task_exec_id),
    CONSTRAINT fk_task_states_workflow_exec_id FOREIGN KEY (workflow_exec_id)
        REFERENCES workflow_states (workflow_exec_id) ON DELETE CASCADE,
    CONSTRAINT fk_task_states_parent_state_id FOREIGN KEY (parent_state_id)
        REFERENCES task_states (task_exec_id) ON DELETE CASCADE,
    CONSTRAINT ck_task_states_status CHECK (status IN
        ('PENDING', 'RUNNING', 'SUCCESS', 'FAILED', 'TIMED_OUT', 'CANCELED', 'WAITING', 'PAUSED')),
    CONSTRAINT ck_task_states_component CHECK (component IN
        ('workflow', 'task', 'agent', 'tool', 'log')),
    CONSTRAINT ck_task_states_execution_type CHECK (execution_type IN
        ('basic', 'router', 'parallel', 'collection', 'composite', 'wait', 'signal',
         'aggregate', 'memory')),
    CONSTRAINT ck_task_states_shape CHECK (
        (execution_type = 'basic' AND (
            (agent_id IS NOT NULL AND action_id IS NOT NULL AND tool_id IS NULL)
            OR (tool_id IS NOT NULL AND agent_id IS NULL AND action_id IS NULL)
            OR (agent_id IS NULL AND action_id IS NULL AND tool_id IS NULL)))
        OR (execution_type = 'router' AND agent_id IS NULL AND action_id IS NULL
            AND tool_id IS NULL)
        OR execution_type NOT IN ('basic', 'router')),
    CONSTRAINT ck_task_states_usage CHECK (usage IS NULL OR jsonb_typeof(usage) = 'array'),
    CONSTRAINT ck_task_states_input CHECK (input IS NULL OR jsonb_typeof(input) = 'object'),
    CONSTRAINT ck_task_states_output CHECK (output IS NULL OR jsonb_typeof(output) = 'object'),
    CONSTRAINT ck_task_states_error CHECK (error IS NULL OR jsonb_typeof(error) = 'object')
);

CREATE INDEX ix_task_states_workflow_exec_id_created_at ON task_states (workflow_exec_id, created_at);
CREATE INDEX ix_task_states_parent_state_id_created_at ON task_states (parent_state_id, created_at);
CREATE INDEX ix_task_states_workflow_exec_id_task_id ON task_states (workflow_exec_id, task_id);
CREATE INDEX ix_task_states_status ON task_states (status);
CREATE INDEX ix_task_states_agent_id ON task_states (agent_id);
CREATE INDEX ix_task_states_tool_id ON task_states (tool_id);

-- migrate:down
DROP TABLE task_states;
DROP TABLE workflow_states;
