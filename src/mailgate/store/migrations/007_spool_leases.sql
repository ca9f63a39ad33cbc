-- Spool claims with leases (issue 13): a worker (of any node) claims spooled rows by writing its
-- owner id and an expiry; another worker skips them until the lease runs out, so a crashed
-- owner's messages are taken over after the lease instead of never (seq % workers partitions
-- could not be shared between nodes, nor survive a change of the worker count).
ALTER TABLE messages ADD COLUMN lease_owner TEXT;
ALTER TABLE messages ADD COLUMN lease_until REAL;
