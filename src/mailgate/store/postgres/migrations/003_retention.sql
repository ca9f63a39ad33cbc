-- Retention on PostgreSQL (issue 15), as SQLite's 008_retention.sql: ``purged`` lists what the
-- purger already removed from a message that is kept ("raw", "attachments"), so a purge run
-- does not pick it again and blob reference checks ignore its envelope; purges look messages up
-- by their receive time.
ALTER TABLE messages ADD COLUMN purged TEXT NOT NULL DEFAULT '';
CREATE INDEX messages_received ON messages(received_at);
