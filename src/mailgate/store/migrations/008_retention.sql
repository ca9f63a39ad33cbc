-- Retention (issue 15): what the purger already removed from a message that is still kept.
--
-- ``purged`` lists the parts dropped under [retention] ("raw", "attachments"; comma-separated),
-- so a purge run does not pick the message again and blob reference checks ignore its envelope.
-- A message whose envelope expires is deleted whole; its dedup_keys and thread_messages rows
-- stay behind as tombstones (a key and a thread id, no content), so a late duplicate is still
-- recognised and a late reply still finds its thread.
ALTER TABLE messages ADD COLUMN purged TEXT NOT NULL DEFAULT '';
CREATE INDEX messages_received ON messages(received_at);
