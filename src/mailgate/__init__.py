"""mailgate: self-hosted SMTP ingestion with MIME parsing and a support-automation pipeline."""

__version__ = "0.1.0"
