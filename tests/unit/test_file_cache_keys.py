"""A file-cache key is a file name: it never reaches outside the cache folder."""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path

import pytest

from database.exceptions import ValidationError
from database.filecache import FileCache

HOSTILE_KEYS = ["../escaped", "..", ".", "", "a/b", "a\\b", "/etc/passwd", "nul\0byte", None, 42]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_key_that_names_another_folder_is_refused_by_every_method(
    tmp_path: Path, key: object, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    outside = tmp_path / "escaped.cache"
    outside.write_bytes(b"not the cache's")
    cache = FileCache(folder)
    with caplog.at_level(logging.ERROR, logger="database.filecache.cache"):
        # The old interface never raises: refused, logged, answered as a failure.
        assert cache.set(key, {"x": 1}) is False  # type: ignore[arg-type]
        assert cache.get(key) is None  # type: ignore[arg-type]
        assert cache.delete(key) is False  # type: ignore[arg-type]
    assert len(caplog.records) == 3
    assert all("invalid key" in record.getMessage() for record in caplog.records)
    with pytest.raises(ValidationError) as caught:  # the typed reader still raises
        cache.read(key)  # type: ignore[arg-type]
    assert caught.value.field == "key"
    assert outside.read_bytes() == b"not the cache's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "escaped.cache"]
    assert list(folder.iterdir()) == []


def test_an_ordinary_key_still_works(tmp_path: Path) -> None:
    cache = FileCache(tmp_path)
    cache.set("0cc175b9c0f1b6a831c399e269772661", {"price": 1})
    assert cache.get("0cc175b9c0f1b6a831c399e269772661") == {"price": 1}
    assert cache.delete("0cc175b9c0f1b6a831c399e269772661") is True


def test_a_key_too_long_or_not_encodable_as_a_file_name_is_refused(tmp_path: Path) -> None:
    cache = FileCache(tmp_path)
    for key in ("k" * 250, "lone\ud800surrogate"):
        assert cache.set(key, 1) is False
        with pytest.raises(ValidationError) as caught:
            cache.read(key)
        assert caught.value.field == "key"
    assert list(tmp_path.iterdir()) == []


KEY = "0cc175b9c0f1b6a831c399e269772661"
SECRET = pickle.dumps({"data": "outside", "timestamp": time.time(), "expiration": 3600})


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid cache file outside the cache folder, which a link in the folder points to."""
    target = tmp_path / "outside.cache"
    target.write_bytes(SECRET)
    return target


@pytest.fixture
def linked(tmp_path: Path, outside: Path) -> FileCache:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / f"{KEY}.cache").symlink_to(outside)
    return FileCache(folder)


def test_get_does_not_follow_an_entry_that_is_a_symlink(linked: FileCache) -> None:
    assert linked.get(KEY) is None
    assert linked.remaining(KEY) is None


def test_set_replaces_the_link_and_never_writes_through_it(
    linked: FileCache, outside: Path
) -> None:
    assert linked.set(KEY, {"inside": 1}) is True
    assert outside.read_bytes() == SECRET
    entry = linked.directory / f"{KEY}.cache"
    assert not entry.is_symlink()
    assert linked.get(KEY) == {"inside": 1}
    assert sorted(p.name for p in linked.directory.iterdir()) == [f"{KEY}.cache"]  # no temp


def test_set_does_not_write_through_a_planted_temporary_link(tmp_path: Path, outside: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / f"{KEY}.tmp").symlink_to(outside)  # the old fixed temporary name
    FileCache(folder).set(KEY, 2)
    assert outside.read_bytes() == SECRET
    assert FileCache(folder).get(KEY) == 2


def test_delete_removes_the_link_itself_never_its_target(linked: FileCache, outside: Path) -> None:
    assert linked.delete(KEY) is True
    assert outside.read_bytes() == SECRET
    assert list(linked.directory.iterdir()) == []
    assert linked.delete(KEY) is True  # the old cache's answer for a missing key


def test_a_linked_folder_entry_is_neither_followed_nor_emptied(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.cache").write_bytes(SECRET)
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / f"{KEY}.cache").symlink_to(elsewhere, target_is_directory=True)
    cache = FileCache(folder)
    assert cache.get(KEY) is None
    assert cache.get_stats()["items"] == 0
    assert cache.clear() is True  # removes the link
    assert list(folder.iterdir()) == []
    assert (elsewhere / "keep.cache").read_bytes() == SECRET


def test_clear_and_stats_walk_only_the_folder_and_not_through_links(
    linked: FileCache, outside: Path
) -> None:
    linked.set("own", [1])
    (linked.directory / "sub.cache").mkdir()
    stats = linked.get_stats()
    assert stats["items"] == 1  # the regular file only: a link is not read
    assert stats["size"] == (linked.directory / "own.cache").stat().st_size
    assert linked.clear() is True  # the file and the link itself; not the sub-folder
    assert outside.read_bytes() == SECRET
    assert sorted(p.name for p in linked.directory.iterdir()) == ["sub.cache"]


def test_a_file_over_the_limits_reads_as_missing(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, max_file_size=1024, max_allocation=64 * 1024)
    cache.set("small", "x")
    cache.set("large", "x" * 2048)
    assert cache.get("small") == "x"
    assert cache.get("large") is None
    (tmp_path / "bomb.cache").write_bytes(
        b"\x80\x02cbuiltins\nbytearray\n\x8a\x04\x00\x00\x00@\x85R."
    )
    assert FileCache(tmp_path).get("bomb") is None
