"""Logging and metrics made cheaper per event, and what must not change with it: the logger follows
every reconfiguration (streams, levels, capture in tests), JSON lines stay JSON whatever a field
holds, secrets stay masked, and a cached metric child is the registered one."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from processor.observe import Metrics, configure_logging, get_logger, register_secret


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    configure_logging("info", "json", io.StringIO())


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_logger_follows_a_new_stream_and_a_new_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    get_logger(request_id="PR-1").info("one")
    configure_logging("warning", "json", second)
    get_logger(request_id="PR-1").info("dropped: below the level")
    get_logger(request_id="PR-1").warning("two")
    assert [(e["event"], e["request_id"], e["level"]) for e in lines(first)] == [
        ("one", "PR-1", "info")
    ]
    assert [e["event"] for e in lines(second)] == ["two"]


def test_captured_logs_see_the_events_of_a_logger_used_before() -> None:
    configure_logging("info", "json", io.StringIO())
    get_logger(request_id="PR-1").info("before")
    with capture_logs() as captured:
        get_logger(request_id="PR-2").info("during", outcome="ok")
    assert [(c["event"], c["request_id"], c["outcome"]) for c in captured] == [
        ("during", "PR-2", "ok")
    ]


def test_json_lines_hold_any_field_and_mask_secrets() -> None:
    secret = "bench-observe-secret-123"
    register_secret(secret)
    out = io.StringIO()
    configure_logging("info", "json", out)
    get_logger().info(
        "odd_fields",
        big=2**70,  # beyond what orjson encodes: the standard encoder takes over
        keyed={1: "int key"},
        thing=object(),
        error=f"vendor said {secret}",
    )
    (event,) = lines(out)
    assert event["big"] == 2**70
    assert event["error"] == "vendor said ***"
    assert str(event["thing"]).startswith("<object object")
    assert secret not in out.getvalue()


def test_a_cached_metric_child_is_the_registered_one() -> None:
    metrics = Metrics()
    first = metrics.transitions.labels(state="approved")
    assert metrics.transitions.labels(state="approved") is first
    first.inc()
    metrics.transitions.labels(state="approved").inc()
    sample = metrics.registry.get_sample_value
    assert sample("cancel_journal_transitions_total", {"state": "approved"}) == 2
    metrics.transitions.remove("approved")
    assert sample("cancel_journal_transitions_total", {"state": "approved"}) is None
    metrics.transitions.labels(state="approved").inc()  # a new child, registered again
    assert sample("cancel_journal_transitions_total", {"state": "approved"}) == 1


def test_a_secret_is_masked_in_any_text_field_however_the_event_is_looked_through() -> None:
    secret = "bench-observe-secret-456"
    register_secret(secret)
    out = io.StringIO()
    configure_logging("info", "json", out)

    class Text(str):
        pass

    get_logger(request_id="PR-1").info("plain", attempt=1, outcome=None, detail=f"x{secret}y")
    get_logger(request_id="PR-1").info("nested", detail={"why": [secret]})
    get_logger(request_id="PR-1").info("subclass", detail=Text(secret))
    get_logger(request_id=secret).info("bound", ok=True, ratio=0.5)
    get_logger(request_id="PR-1").info("clean", detail="nothing to hide", attempt=2)
    events = {e["event"]: e for e in lines(out)}
    assert events["plain"]["detail"] == "x***y"
    assert events["nested"]["detail"] == {"why": ["***"]}
    assert events["subclass"]["detail"] == "***"
    assert events["bound"]["request_id"] == "***"
    assert events["clean"]["detail"] == "nothing to hide"
    assert secret not in out.getvalue()
