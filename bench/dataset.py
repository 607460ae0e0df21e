"""The data every tool backs up: `pgbench -i -s SCALE` plus a `docs` table like a search/RAG application's.

`docs` has a title, a ~30-word body, a 384-float embedding (`vector(384)` with pgvector, else `real[]`: the same
bytes, equally incompressible) and a pg_trgm GIN index on the body; the same shape and sizes as the shared
harness, so the numbers compare.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.postgres import Postgres, SetupError

WORDS = ("backup restore archive segment replica standby primary checkpoint vacuum index tuple page heap toast "
         "snapshot manifest bucket object stream compress encrypt verify retention policy schedule operator "
         "cluster tenant invoice customer order product shipment payment refund ledger account balance audit "
         "event metric alert").split()


@dataclass(frozen=True)
class Dataset:
    scale: int
    vector_rows: int
    vector_type: str
    db_size_bytes: int

    @property
    def accounts(self) -> int:
        return self.scale * 100_000


def _random_words(count: int) -> str:
    """SQL for `count` random words from WORDS (`w` is the word array in scope)."""
    # `g > 0` ties the subquery to the outer row, so every row draws new words
    return (f"(SELECT string_agg(word, ' ') FROM (SELECT w[1 + floor(random() * {len(WORDS)})::int] AS word "
            f"FROM generate_series(1, {count}) WHERE g > 0) AS picked)")


def build(pg: Postgres, scale: int, vector_rows: int) -> Dataset:
    try:
        return _build(pg, scale, vector_rows)
    except RuntimeError as e:
        raise SetupError(f"could not build the dataset: {e}") from e


def _build(pg: Postgres, scale: int, vector_rows: int) -> Dataset:
    pg.psql("CREATE DATABASE bench", "postgres")
    done = subprocess.run([pg.bin("pgbench"), "-i", "-q", "-s", str(scale), "bench"], env=pg.client_env(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"pgbench -i -s {scale} failed: {done.stderr.strip()[-400:]}")
    has_vector = pg.psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'") == "1"
    vector_type = "vector(384)" if has_vector else "real[]"
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    if has_vector:
        pg.psql("CREATE EXTENSION IF NOT EXISTS vector")
    if vector_rows > 0:
        words = ", ".join(f"'{w}'" for w in WORDS)
        pg.psql(f"""
            CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL,
                               embedding {vector_type} NOT NULL);
            INSERT INTO docs
            SELECT g, initcap({_random_words(6)}), {_random_words(30)} || ' ' || md5(g::text),
                   (SELECT array_agg(random()::real) FROM generate_series(1, 384) WHERE g > 0)::{vector_type}
            FROM generate_series(1, {vector_rows}) g, (SELECT ARRAY[{words}] AS w) AS vocabulary;
            CREATE INDEX docs_body_trgm ON docs USING gin (body gin_trgm_ops);
        """)
        pg.psql("VACUUM ANALYZE docs")
    pg.psql("CHECKPOINT", "postgres")
    size = int(pg.psql("SELECT pg_database_size('bench')"))
    warm_page_cache(pg.datadir)
    return Dataset(scale, vector_rows, vector_type, size)


def warm_page_cache(datadir: Path) -> None:
    """Read the data directory once, so the first tool timed does not pay for cold reads."""
    buffer = bytearray(1 << 20)
    for root, _, files in os.walk(datadir):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb", buffering=0) as f:
                    while f.readinto(buffer):
                        pass
            except OSError:
                continue


def check_restored(pg: Postgres, dbname: str, dataset: Dataset) -> str:
    """Compare the restored row counts with the dataset's; raise when they differ."""
    accounts = int(pg.psql("SELECT count(*) FROM pgbench_accounts", dbname))
    if accounts != dataset.accounts:
        raise RuntimeError(f"restored pgbench_accounts in {dbname!r} has {accounts} rows, expected {dataset.accounts}")
    if dataset.vector_rows:
        docs = int(pg.psql("SELECT count(*) FROM docs", dbname))
        if docs != dataset.vector_rows:
            raise RuntimeError(f"restored docs in {dbname!r} has {docs} rows, expected {dataset.vector_rows}")
    return "row counts verified"
