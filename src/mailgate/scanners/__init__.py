"""Clients for the content-scanning daemons mail operators run: rspamd (spam) and clamd (viruses).

Each client speaks its daemon's own protocol (rspamd's ``/checkv2`` over HTTP, clamd's
``zINSTREAM`` over a socket), returns a plain verdict, and raises `ScanError` for every way the
daemon can fail us (down, slow, garbage, message too large). What to do about a failure is the
pipeline stage's business (its ``on_error``), not the client's. This package knows nothing of
the store, SMTP or the pipeline, so the ``mailgate scan`` command and the stages share it.
"""

from mailgate.scanners.base import ScanError, SpamSymbol, SpamVerdict, VirusVerdict

__all__ = ["ScanError", "SpamSymbol", "SpamVerdict", "VirusVerdict"]
