"""A file-cache key is a file name: it never reaches outside the cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from database.exceptions import ValidationError
from database.filecache import FileCache

HOSTILE_KEYS = ["../escaped", "..", ".", "", "a/b", "a\\b", "/etc/passwd", "nul\0byte", None, 42]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_key_that_names_another_folder_is_refused_by_every_method(
    tmp_path: Path, key: object
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    outside = tmp_path / "escaped.cache"
    outside.write_bytes(b"not the cache's")
    cache = FileCache(folder)
    for call in (
        lambda: cache.set(key, {"x": 1}),
        lambda: cache.get(key),
        lambda: cache.delete(key),
    ):
        with pytest.raises(ValidationError) as caught:
            call()
        assert caught.value.field == "key"
    assert outside.read_bytes() == b"not the cache's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "escaped.cache"]
    assert list(folder.iterdir()) == []


def test_an_ordinary_key_still_works(tmp_path: Path) -> None:
    cache = FileCache(tmp_path)
    cache.set("0cc175b9c0f1b6a831c399e269772661", {"price": 1})
    assert cache.get("0cc175b9c0f1b6a831c399e269772661") == {"price": 1}
    assert cache.delete("0cc175b9c0f1b6a831c399e269772661")
