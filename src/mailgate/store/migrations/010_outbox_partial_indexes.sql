-- Throughput (issue 16): two outbox indexes hold only the rows their queries ask for.
--
-- ``outbox_dead`` serves the dead-letter queue (``state = 'dead'``: listing, requeue, expiry)
-- and ``outbox_order`` the per-thread order of claims (an earlier *pending* row of the same
-- thread and target holds a later one back). Holding every row, each delivered webhook moved
-- an entry in both (a state is part of their keys): ~2.5 of the ~11 WAL pages a webhook's
-- publish and delivery wrote. As partial indexes, a delivery leaves ``outbox_dead`` untouched
-- and only drops its ``outbox_order`` entry; the queries' conditions imply the indexes'.
DROP INDEX outbox_dead;
CREATE INDEX outbox_dead ON outbox(state, dead_at) WHERE state = 'dead';
DROP INDEX outbox_order;
CREATE INDEX outbox_order ON outbox(target, ordering_key, state, id) WHERE state = 'pending';
