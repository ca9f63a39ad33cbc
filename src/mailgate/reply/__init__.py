"""Auto-replies: loop protection (``guard``), templates (``templates``), the message (``compose``)
and DKIM signing (``signing``). The ``respond`` stage and the SMTP outbox worker use them; none of
these modules touches the store or the network.
"""
