"""A file named after a card number is stored masked (PCI DSS 3.4.1): the agent masks the
free-text columns of every batch before any sink, the embedded store included."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel

PAN = "4111111111111111"


def test_opened_path_with_a_card_number_is_masked_in_the_store(capture, tmp_path):
    d = tmp_path / "cards"
    d.mkdir()
    path = d / f"settle-{PAN}.json"
    code = f"import sys\nsys.stdin.readline()\nopen({str(path)!r}, 'w').write('x')\nprint('done', flush=True)\n"
    p = capture.spawn(sys.executable, "-c", code, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"done"
    assert p.wait(10) == 0
    rows = capture.rows(f"SELECT path FROM fd_open WHERE tgid = {p.pid} AND path LIKE '%settle-%'")
    assert rows, "the open was not recorded: the test proves nothing"
    assert all(PAN not in r["path"] for r in rows), rows
    assert any("411111******1111" in r["path"] for r in rows), rows
