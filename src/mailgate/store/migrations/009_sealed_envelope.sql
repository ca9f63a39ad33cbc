-- Encryption at rest (issue 15): an envelope's sealed fields, as one AES-256-GCM ciphertext.
--
-- With a key configured, the fields that carry content or name people (store.crypto
-- ENCRYPTED_FIELDS) leave ``envelope`` (which keeps the JSON that SQL reads: queue,
-- attachments) and are stored here as raw ciphertext bytes: no base64 to encode and decode,
-- and no JSON string to escape-scan, around ~200 KB of text per 100 KB message. NULL: nothing
-- sealed (no key; or an envelope sealed field by field inside ``envelope`` before this column).
ALTER TABLE messages ADD COLUMN sealed BLOB;
