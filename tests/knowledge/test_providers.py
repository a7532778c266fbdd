"""What is particular to the filesystem, Qdrant and Redis providers, beyond the contract: files
and their modes, several processes on one directory, compaction, crashes; clients that are
missing or cannot connect; how ids and filters are encoded."""

from __future__ import annotations

import json
import multiprocessing
import re
import stat
import sys
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import fakeredis
import pytest

from compozy.config import VectorDBConfig
from compozy.errors import CompozyError, ConfigError, StoreUnavailable
from compozy.knowledge import MetadataValue, Record
from compozy.knowledge.providers import filesystem, open_vector_store
from compozy.knowledge.providers.filesystem import FilesystemVectorStore
from compozy.knowledge.providers.qdrant import QdrantVectorStore, point_id
from compozy.knowledge.providers.redis import RedisVectorStore, filter_expression

PROCESSES, BATCHES, SIZE = 4, 10, 5


def _records(prefix: str, count: int, **metadata: MetadataValue) -> list[Record]:
    return [Record(f"{prefix}{n}", [1.0, float(n), 2.0], f"t{n}", metadata) for n in range(count)]


def _upsert_batches(path: str, worker: int) -> int:
    """In a spawned process: BATCHES upserts of SIZE records each through a store of its own."""
    store = FilesystemVectorStore(path, 3)
    try:
        for batch in range(BATCHES):
            store.upsert(_records(f"p{worker}-{batch}-", SIZE, worker=worker))
        return store.count({"worker": worker})
    finally:
        store.close()


# -- filesystem ---------------------------------------------------------------------------------


def test_filesystem_files_are_private_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "new" / "kb"
    store = FilesystemVectorStore(path, 3)
    store.upsert(_records("r", 3))
    store.delete(["r0"])
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    names = sorted(p.name for p in path.iterdir())
    assert names == [
        "lock",
        "manifest.json",
        "seg-00000001.json",
        "seg-00000001.npy",
        "seg-00000002.json",
        "seg-00000002.npy",
    ]
    assert {stat.S_IMODE((path / n).stat().st_mode) for n in names} == {0o600}
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["dimension"] == 3
    assert manifest["segments"] == ["seg-00000001", "seg-00000002"]


def test_filesystem_upserts_from_several_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "kb")
    watcher = FilesystemVectorStore(path, 3)  # open before: it must see the others' writes
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        counts = list(pool.map(_upsert_batches, [path] * PROCESSES, range(PROCESSES)))
    assert counts == [BATCHES * SIZE] * PROCESSES
    assert watcher.count() == PROCESSES * BATCHES * SIZE
    every = [f"p{w}-{b}-{n}" for w in range(PROCESSES) for b in range(BATCHES) for n in range(SIZE)]
    assert [r.id for r in watcher.get(every)] == every
    watcher.close()


def test_filesystem_compaction_keeps_the_data_and_removes_old_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filesystem, "MAX_SEGMENTS", 4)
    path = tmp_path / "kb"
    store = FilesystemVectorStore(path, 3)
    other = FilesystemVectorStore(path, 3)
    assert other.count() == 0  # read before the compactions
    for batch in range(10):
        store.upsert(_records(f"b{batch}-", 3, batch=batch))
    store.delete(where={"batch": 0})
    segments = json.loads((path / "manifest.json").read_text())["segments"]
    assert len(segments) <= 5
    on_disk = {p.stem for p in path.glob("seg-*")}
    assert on_disk == set(segments)
    # A store that read the segments that are gone reads everything again.
    assert other.count() == 27
    assert other.count({"batch": 0}) == 0
    assert [r.text for r in other.get(["b9-2", "b1-0"])] == ["t2", "t0"]
    store.close()
    other.close()
    reopened = FilesystemVectorStore(path, 3)
    assert reopened.count() == 27
    reopened.close()


def test_filesystem_a_write_cut_before_its_manifest_leaves_the_previous_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kb"
    store = FilesystemVectorStore(path, 3)
    store.upsert(_records("r", 2))
    store.close()
    # What a crash between the segment files and the manifest's rename leaves behind.
    (path / "seg-00000002.json").write_text('{"ids": ["half')
    (path / "manifest.json.123.456.tmp").write_text("{")
    reopened = FilesystemVectorStore(path, 3)
    assert reopened.count() == 2
    reopened.upsert(_records("s", 1))  # the next write takes the number and overwrites it
    assert reopened.count() == 3
    reopened.close()


def test_filesystem_a_damaged_manifest_is_a_store_error_naming_the_directory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kb"
    FilesystemVectorStore(path, 3).close()
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreUnavailable, match=re.escape(str(path))):
        FilesystemVectorStore(path, 3)


def test_filesystem_a_path_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable, match="filesystem vector store"):
        FilesystemVectorStore(tmp_path / "file", 3)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = FilesystemVectorStore(tmp_path / "kb", 3)
    store.close()
    store.close()
    with pytest.raises(CompozyError, match="closed"):
        store.count()


# -- the factory --------------------------------------------------------------------------------


def test_a_missing_client_library_is_one_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "compozy.knowledge.providers.qdrant", raising=False)
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    config = VectorDBConfig(id="kb", provider="qdrant", path=":memory:", dimension=3)
    with pytest.raises(ConfigError) as caught:
        open_vector_store(config)
    assert str(caught.value) == (
        "the qdrant vector store needs the qdrant-client package, which is not installed; "
        'install it with: pip install "compozy[knowledge]"'
    )


def test_the_factory_opens_each_provider(tmp_path: Path) -> None:
    made = [
        open_vector_store(
            VectorDBConfig(id="fs", provider="filesystem", path=str(tmp_path), dimension=3)
        ),
        open_vector_store(VectorDBConfig(id="q", provider="qdrant", path=":memory:", dimension=3)),
    ]
    assert [type(s).__name__ for s in made] == ["FilesystemVectorStore", "QdrantVectorStore"]
    for store in made:
        assert store.dimension == 3
        store.close()


# -- qdrant -------------------------------------------------------------------------------------


def test_qdrant_point_ids_are_uuid5_of_the_record_id() -> None:
    assert uuid.UUID(point_id("chunk-2")).version == 5
    assert point_id("chunk-2") == point_id("chunk-2") != point_id("chunk-3")
    assert (
        point_id("00000000-0000-0000-0000-000000000001") != "00000000-0000-0000-0000-000000000001"
    )


def test_qdrant_server_that_does_not_answer_is_a_store_error() -> None:
    config = VectorDBConfig(id="q", provider="qdrant", url="http://127.0.0.1:9", dimension=3)
    with pytest.raises(StoreUnavailable, match=re.escape("qdrant vector store http://127.0.0.1:9")):
        open_vector_store(config)


def test_qdrant_api_key_variable_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CPZY_QDRANT_KEY", raising=False)
    config = VectorDBConfig(
        id="q",
        provider="qdrant",
        url="http://127.0.0.1:9",
        api_key_env="CPZY_QDRANT_KEY",
        dimension=3,
    )
    with pytest.raises(ConfigError, match="CPZY_QDRANT_KEY"):
        open_vector_store(config)


def test_qdrant_local_folder_open_twice_is_a_store_error(tmp_path: Path) -> None:
    first = QdrantVectorStore("c", 3, path=str(tmp_path))
    try:
        with pytest.raises(StoreUnavailable, match="local mode is one process only"):
            QdrantVectorStore("c", 3, path=str(tmp_path))
    finally:
        first.close()


def test_qdrant_collection_with_another_distance_is_refused() -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(location=":memory:")
    client.create_collection(
        "euclid", vectors_config=models.VectorParams(size=3, distance=models.Distance.EUCLID)
    )
    with pytest.raises(ConfigError, match="needs Cosine"):
        QdrantVectorStore("euclid", 3, client=client)


# -- redis --------------------------------------------------------------------------------------


def test_redis_filter_expressions_hold_no_user_text() -> None:
    expression = filter_expression({'k" || 1 == 1 || "': 'v") or ("', "and": 1.5, "x.y": True})
    # Selectors and literals of hex digits only, joined with &&.
    assert re.fullmatch(
        r'(\.w_[0-9a-f]+ == "[0-9a-f]+")( && \.w_[0-9a-f]+ == "[0-9a-f]+")*', expression
    )
    assert expression.count("&&") == 2


def test_redis_that_does_not_answer_is_a_store_error() -> None:
    config = VectorDBConfig(id="r", provider="redis", url="redis://127.0.0.1:9/0", dimension=3)
    with pytest.raises(StoreUnavailable, match="redis vector store key 'compozy_r'"):
        open_vector_store(config)


def test_redis_key_holding_something_else_is_a_store_error() -> None:
    client = fakeredis.FakeRedis()
    client.set("taken", "a string")
    with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
        RedisVectorStore("taken", 3, client)


def test_redis_stores_exact_vectors_without_quantization() -> None:
    client = fakeredis.FakeRedis()
    store = RedisVectorStore("k", 3, client)
    store.upsert([Record("r", [0.1234567, -2.5, 3.0])])
    info = client.execute_command("VINFO", "k")  # type: ignore[no-untyped-call]
    assert info[b"quant-type"] in (b"f32", b"noquant")
    assert store.get(["r"])[0].vector == pytest.approx([0.1234567, -2.5, 3.0], rel=1e-6)


def test_the_pinned_fakeredis_has_vector_sets() -> None:
    # 2.41 dropped them silently (VADD becomes an unknown command): keep the pin.
    assert fakeredis.FakeRedis().execute_command("VCARD", "nothing") == 0  # type: ignore[no-untyped-call]
