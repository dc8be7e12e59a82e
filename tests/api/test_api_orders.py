"""`GET /api/v1/why/business?order=CLORDID` over spans decoded from a FIX session, and the domain map.

The demo has no orders, so this store is made the way tests/finance makes its business store: a FIX 4.4
conversation encoded by simplefix (``tests/finance/kprobe_fix_session.py``, imported, not copied) fed
through kprobe's FIX decoder into span rows in a real chDB store. The API's answers are compared with
:func:`kprobe.finance.timeline.build` on that store, with the default map and with a domain map given to
the server (as ``$KPROBE_DOMAIN_MAP`` gives it to the CLI); a broken map stops `kprobe serve` at start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import TOKEN, api_get
from tests.finance.kprobe_fix_session import fix_conversation

MAP = """
version: 1
events:
  - {name: Order, kind: order_new, match: {protocol: fix, message: NewOrderSingle}, key: fix.cl_ord_id}
  - {name: Fill, kind: order_ack, match: {protocol: fix, message: "ExecutionReport*"}}
"""


@dataclass
class Orders:
    store: Any
    url: str            # the server without a domain map (each kind's default, like the CLI without one)
    mapped_url: str     # the server given MAP
    dmap: Any


def _write_fix_spans(store: Any) -> None:
    from kprobe.protocols import new_decoder
    from kprobe.protocols.span_rows import SocketPair, SpanRows

    rows = SpanRows("test-host")
    pair = SocketPair("127.0.0.1", 40001, "127.0.0.1", 9878, is_client=True)
    decoder = new_decoder("fix")
    exchanges = []
    for direction, piece, ts in fix_conversation():
        exchanges += decoder.feed(direction, piece, ts)
    for i, e in enumerate(exchanges):
        rows.add(e, pair=pair, ordinal=i, service="broker-gw", pid=104, tid=104)
    store.write("spans", rows.columns())


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orders]:
    from kprobe.api.routes import Context
    from kprobe.api.server import ApiServer
    from kprobe.finance.domain import parse
    from kprobe.sinks.chdb_store import ChdbStore

    yaml = pytest.importorskip("yaml")
    data = tmp_path_factory.mktemp("orders") / "data"
    store = ChdbStore(data)
    dmap = parse(yaml.safe_load(MAP))
    plain = mapped = None
    try:
        _write_fix_spans(store)
        plain = ApiServer(Context(store, data, domain_map=None), token=TOKEN, request_timeout=1.0).start()
        mapped = ApiServer(Context(store, data, domain_map=dmap), token=TOKEN, request_timeout=1.0).start()
        yield Orders(store, plain.url, mapped.url, dmap)
    finally:
        for srv in (plain, mapped):
            if srv is not None:
                srv.stop()
        store.close()


def _pages(url: str, query: str, limit: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    first, events, cursor = None, [], None
    for _ in range(100):
        status, page = api_get(url, f"/api/v1/why/business?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor
                                                                                     else ""))
        assert status == 200, page
        first = first or page
        events += page["events"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert first is not None
    return first, events


def _cli(store: Any, dmap: Any, kind: str, key: str) -> dict[str, Any]:
    """What `kprobe why --order KEY --json` prints, from the function it calls."""
    from kprobe.finance.timeline import build, default_map

    tl = build(store, dmap or default_map(kind), key, analyse=True)
    return {"key": key, "kind": kind, "root_cause": tl.root_cause, "incidents": tl.incidents, "notes": tl.notes,
            "events": [e.to_json() for e in tl.events]}


def test_order_why_is_the_clis_answer_with_and_without_a_domain_map(orders: Orders) -> None:
    for url, dmap in ((orders.url, None), (orders.mapped_url, orders.dmap)):
        first, events = _pages(url, "order=ORD-1-fill", limit=1)
        got = {k: first[k] for k in ("key", "kind", "root_cause", "incidents", "notes")} | {"events": events}
        assert got == _cli(orders.store, dmap, "order", "ORD-1-fill")
    # what the conversation says about ORD-1-fill: the order (acked in its exchange) and its two fills
    _, plain = _pages(orders.url, "order=ORD-1-fill", limit=100)
    assert [e["label"] for e in plain] == ["NewOrderSingle", "ExecutionReport Trade", "ExecutionReport Trade"]
    _, mapped = _pages(orders.mapped_url, "order=ORD-1-fill", limit=100)
    assert [e["label"] for e in mapped] == ["Order"] and mapped[0]["kind"] == "order_new"
    # no kernel tables in this store: the analysis says so instead of inventing a cause
    status, a = api_get(orders.url, "/api/v1/why/business?order=ORD-1-fill")
    assert status == 200 and a["root_cause"] == "" and any("no kernel analysis" in n for n in a["notes"]), a
    status, a = api_get(orders.url, "/api/v1/why/business?order=ORD-404")
    assert status == 404 and "no spans mention order 'ORD-404'" in a["error"]["message"]


def test_search_names_an_order_id_as_an_order(orders: Orders) -> None:
    status, res = api_get(orders.url, "/api/v1/search?q=ORD-1-fill")
    assert status == 200, res
    kinds = [m["kind"] for m in res["matches"]]
    assert "order" in kinds and "payment" not in kinds, res       # the same spans: the specific meaning only
    order = next(m for m in res["matches"] if m["kind"] == "order")
    assert order["route"] == "/order/ORD-1-fill" and "3 events" in order["label"], order


def test_a_broken_domain_map_stops_kprobe_serve(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - {name: X, kind: nope, match: {service: a}}\n")
    data = tmp_path / "d"
    # an (empty) recording of its own, made in another process: this one holds the module's chDB store
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from kprobe.sinks.chdb_store "
                    "import ChdbStore; ChdbStore(Path(sys.argv[1])).close()", str(data)], check=True, timeout=120)
    env = dict(os.environ, KPROBE_DOMAIN_MAP=str(bad))
    out = subprocess.run([sys.executable, "-m", "kprobe", "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and "cannot serve" in out.stderr and "unknown kind 'nope'" in out.stderr, out.stderr


def test_the_server_takes_the_clis_domain_map_from_the_environment(orders: Orders, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from kprobe.api.routes import Context

    path = tmp_path / "map.yaml"
    path.write_text(MAP)
    monkeypatch.setenv("KPROBE_DOMAIN_MAP", str(path))
    assert Context(orders.store, tmp_path).domain_map == orders.dmap
    monkeypatch.delenv("KPROBE_DOMAIN_MAP")
    assert Context(orders.store, tmp_path).domain_map is None
