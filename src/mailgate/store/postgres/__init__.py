"""The PostgreSQL backend: several ``serve`` nodes share one database (issue 13).

Driver: asyncpg (native asyncio, binary protocol, a connection pool, ``LISTEN`` callbacks;
see the README's dependency table). Every claim is ``FOR UPDATE SKIP LOCKED`` with a lease
owned by a node's worker; every cross-node race (dedup keys, threads, ticket numbers) is
settled by a unique constraint or a row lock, and the loser runs again.
"""

from mailgate.store.postgres.core import PostgresStore

__all__ = ["PostgresStore"]
