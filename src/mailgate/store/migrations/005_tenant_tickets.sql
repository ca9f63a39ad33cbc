-- Per-tenant ticket numbers, and reply limits counted across tenants.
--
-- Ticket numbers were the global spool sequence, so one tenant could infer the others' volume
-- from the numbers it saw. Each tenant now has its own counter, advanced by a trigger when a
-- message is spooled (``messages.tenant_seq``; a replayed run keeps its number). Messages
-- stored before this migration keep the number they had; every existing tenant's counter
-- starts above every number handed out so far, so no new ticket repeats an old one.

ALTER TABLE messages ADD COLUMN tenant_seq INTEGER;
UPDATE messages SET tenant_seq = seq;

CREATE TABLE ticket_counters (
    tenant  TEXT PRIMARY KEY,
    last    INTEGER NOT NULL       -- the last number handed out in this tenant
) WITHOUT ROWID;
INSERT INTO ticket_counters (tenant, last)
    SELECT DISTINCT tenant, (SELECT COALESCE(MAX(seq), 0) FROM messages) FROM messages WHERE true;

CREATE TRIGGER messages_tenant_seq AFTER INSERT ON messages
BEGIN
    INSERT INTO ticket_counters (tenant, last) VALUES (NEW.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET last = last + 1;
    UPDATE messages SET tenant_seq = (SELECT last FROM ticket_counters WHERE tenant = NEW.tenant)
        WHERE seq = NEW.seq;
END;

-- The reply limits per return path and per recipient domain count every tenant's replies
-- (per tenant, twenty wildcard labels meant twenty acknowledgements to one forged victim).
ALTER TABLE reply_outbox ADD COLUMN recipient_domain TEXT NOT NULL DEFAULT '';
UPDATE reply_outbox SET recipient_domain = lower(substr(recipient, instr(recipient, '@') + 1));
CREATE INDEX reply_outbox_recipient_any ON reply_outbox(recipient_key, created_at);
CREATE INDEX reply_outbox_domain ON reply_outbox(recipient_domain, created_at);
