-- Throughput (issue 16), as SQLite's migration 010: two outbox indexes hold only the rows their
-- queries ask for. ``outbox_dead`` serves the dead-letter queue (``state = 'dead'``) and
-- ``outbox_order`` the per-thread order of claims (an earlier *pending* row of a thread holds
-- a later one back); a delivered webhook's update then adds no entry to either.
DROP INDEX outbox_dead;
CREATE INDEX outbox_dead ON outbox(state, dead_at) WHERE state = 'dead';
DROP INDEX outbox_order;
CREATE INDEX outbox_order ON outbox(target, ordering_key, state, id) WHERE state = 'pending';
