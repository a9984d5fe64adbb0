"""Sessions under load on a tiny bundle, with bench/bench_load.py's machinery: concurrent clients
get bit-for-bit what the same requests give alone, and a full queue answers with a clear message.
(The 8-client / 200-session version: ``python -m bench load``.)"""
from __future__ import annotations

import pytest

from test_app_paint import make_app_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from bench.bench_load import Server
    bundle = make_app_bundle(tmp_path_factory.mktemp("load") / "tiny")
    # the app's QUEUE settings with a small max_size, so a few requests fill the queue
    with Server(str(bundle), max_size=4) as srv:
        yield srv


def test_concurrent_sessions_get_what_they_get_alone(server):
    from bench.bench_load import Payloads, client, isolation, paint_concepts, script
    clients = [client(server.url) for _ in range(3)]
    try:
        pay = Payloads()
        concepts = paint_concepts(clients[0])
        scripts = [script(i, server.source, concepts, pay, watermark=True) for i in range(3)]
        iso = isolation(clients, scripts)
        assert iso["same"] == [True, True, True]
        # the sessions' own results differ (own image, strokes, undo), so equality is isolation
        finals = [str(outs[3]) for outs in iso["alone"]]
        assert len(set(finals)) == 3
    finally:
        for c in clients:
            c.close()


def test_full_queue_gives_a_clear_message(server):
    from bench.bench_load import client, fill_queue
    from demos.settings import QUEUE
    assert isinstance(QUEUE["max_size"], int)       # the app's queue is bounded
    c = client(server.url)
    try:
        full = fill_queue(c, server.source, server.queue["max_size"])
    finally:
        c.close()
    assert full["other"] == []
    assert full["rejected"] >= 1 and full["accepted"] >= server.queue["max_size"]
    assert full["message"].startswith("Queue is full. Max size is 4")
