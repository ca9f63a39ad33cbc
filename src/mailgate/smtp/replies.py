"""Named SMTP replies (RFC 5321 codes with RFC 3463 enhanced status codes).

Every reply mailgate sends is one of these constants, so the text a client sees for a given
situation is the same everywhere and greppable (Mailman's ``ERR_451``/``ERR_550`` style).
"""

from __future__ import annotations

OK = "250 2.0.0 OK"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"


def queued(msg_id: str) -> str:
    return f"250 2.0.0 OK: queued as {msg_id}"


TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_CONNECTIONS_IP = "421 4.7.0 Too many connections from your IP address, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
RATE_LIMITED = "450 4.7.1 Too many messages from your IP address, slow down and try again later"
STORE_FAILED = "451 4.3.0 Temporary failure storing the message, try again later"
AUTH_TEMPFAIL = "451 4.7.5 Temporary failure checking the sender, try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
SYNTAX_SENDER = "501 5.1.7 Bad sender address syntax"
SYNTAX_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
NEED_TLS = "530 5.7.0 Must issue a STARTTLS command first"
UNKNOWN_MAILBOX = "550 5.1.1 No such mailbox here"
DMARC_REJECT = "550 5.7.1 Message rejected by the sender domain's DMARC policy"
SPF_REJECT = "550 5.7.23 Message rejected by the sender domain's SPF policy"
TOO_BIG = "552 5.3.4 Message size exceeds the fixed maximum message size"
RELAY_DENIED = "554 5.7.1 Relay access denied"
LINE_TOO_LONG = "500 5.5.6 Line too long (RFC 5321 4.5.3.1.6)"
