"""`buffetbot-db import-cache` refuses oversized and bomb files, with the reason, and goes on."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

from database.filecache import make_key
from tests.e2e.test_cli import cli

BOMB = b"\x80\x02cbuiltins\nbytearray\n\x8a\x04\x00\x00\x00@\x85R."  # bytearray(1 << 30)


def test_the_import_command_takes_the_limits_and_reports_each_refusal(
    empty_url: str, tmp_path: Path
) -> None:
    cli(empty_url, "upgrade")
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "bomb.cache").write_bytes(BOMB)
    entry = {"data": "x" * (2 << 20), "timestamp": time.time(), "expiration": 3600}
    (folder / "large.cache").write_bytes(pickle.dumps(entry))
    small = {"data": {"price": 1}, "timestamp": time.time(), "expiration": 3600}
    (folder / f"{make_key('quote', 1)}.cache").write_bytes(pickle.dumps(small))
    limited = cli(
        empty_url, "import-cache", str(folder), "--max-file-size", "1", "--json", expect=3
    )
    report = json.loads(limited.stdout)
    assert (report["imported"], report["rejected"]) == (1, 2)
    assert "over the 1.0 MiB file size limit" in report["rejected_files"]["large.cache"]
    assert "would allocate 1.0 GiB" in report["rejected_files"]["bomb.cache"]
    table = cli(empty_url, "import-cache", str(folder), "--max-allocation", "1", expect=3)
    said = " ".join(table.stderr.split())
    assert "rejected large.cache: refused to unpickle:" in said
    assert "over the 1.0 MiB limit" in said
    assert "--max-file-size" in cli(None, "import-cache", "--help").stdout
