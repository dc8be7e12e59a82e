"""JSONEachRow text -> list of dicts, in one parser call.

Why: ``why`` reads a few thousand rows per question; one ``json.loads`` per line
costs more than the query itself. JSON strings never hold a raw newline (it is
escaped), so the rows can be joined into one array and parsed at once.
"""

from __future__ import annotations

import json


def parse_json_each_row(data: bytes | str) -> list[dict]:
    text = data.decode() if isinstance(data, bytes) else data
    text = text.strip()
    if not text:
        return []
    return json.loads("[" + text.replace("\n", ",") + "]")
