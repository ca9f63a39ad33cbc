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

# Connection economics (issue 12): every cut says which limit and closes the session.
TOO_MANY_CONNECTIONS_NETWORK = "421 4.7.0 Too many connections from your network, try again later"
TOO_MANY_TRANSFERS_NETWORK = (
    "421 4.7.0 Too many concurrent transfers from your network, try again later"
)
IDLE_TIMEOUT = "421 4.4.2 Idle timeout exceeded, closing connection"
STRESS_IDLE_TIMEOUT = "421 4.4.2 Idle timeout exceeded, server busy, closing connection"
SESSION_TIMEOUT = "421 4.4.2 Session time limit exceeded, closing connection"
DATA_TIMEOUT = "421 4.4.2 DATA time limit exceeded, closing connection"
DATA_TOO_SLOW = "421 4.4.2 DATA transfer too slow, closing connection"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
EARLY_TALKER = "554 5.5.1 Protocol error: client sent data before the greeting"

# Protocol laxity.
TLS_ACTIVE = "503 5.5.1 TLS already active"
EHLO_FIRST = "503 5.5.1 Send EHLO first"
NO_AUTH = "502 5.5.1 AUTH not available: this is an MX, not a submission server"
INTERNAL_ERROR = "451 4.3.0 Internal error, try again later"

# aiosmtpd's stock replies carry no enhanced status code; ``enhanced`` adds one by reply code
# (RFC 3463) so that ENHANCEDSTATUSCODES (RFC 2034) is true of every reply but the greeting and
# the EHLO/HELO response, which RFC 2034 exempts.
_ENHANCED_BY_CODE = {
    "214": "2.0.0",
    "220": "2.0.0",  # "Ready to start TLS"
    "221": "2.0.0",
    "250": "2.0.0",
    "252": "2.0.0",
    "421": "4.3.0",
    "451": "4.3.0",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}


def enhanced(reply: str) -> str:
    """``reply`` with an enhanced status code after the reply code, unless it has one already."""
    if len(reply) < 4 or reply[3] not in " -" or reply[:1] not in "245":
        return reply
    rest = reply[4:]
    first = rest.split(" ", 1)[0]
    if first.count(".") == 2 and first.replace(".", "").isdigit():
        return reply
    code = _ENHANCED_BY_CODE.get(reply[:3]) or f"{reply[0]}.0.0"
    return f"{reply[:4]}{code} {rest}" if rest else f"{reply[:4]}{code}"
