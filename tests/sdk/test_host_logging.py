"""`pyhost.host_logging_handler()`: logging records forwarded through `host.log`."""

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pyhost import host_logging_handler, testing
from pyhost._context import Placeholder, current
from pyhost.host import EmbeddedHost, HostLogHandler


class RecordingTarget:
    """A `Host` stand-in that records `log` calls (and can misbehave)."""

    def __init__(self, *, relog: bool = False, fail: bool = False) -> None:
        self.calls: list[tuple[int | str, str, dict[str, Any]]] = []
        self.relog = relog
        self.fail = fail

    def log(self, level: int | str, message: str, **fields: Any) -> None:
        self.calls.append((level, message, fields))
        if self.relog:
            logging.getLogger("somewhere.inside.the.host").error("the host logs too")
        if self.fail:
            raise RuntimeError("host log is down")


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.sdk.plugin")
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)


@pytest.fixture
def root_handler() -> Iterator[logging.Handler]:
    """The handler installed on the root logger, as the host does."""
    handler = host_logging_handler()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def test_handler_forwards_level_message_and_extra_fields(logger):
    target = RecordingTarget()
    logger.addHandler(HostLogHandler(target=target))
    logger.info("user %s logged in", "ann", extra={"user_id": 7, "tags": ["a"]})
    logger.warning("no extras")
    assert target.calls == [
        (20, "user ann logged in", {"logger": "tests.sdk.plugin", "user_id": 7, "tags": ["a"]}),
        (30, "no extras", {"logger": "tests.sdk.plugin"}),
    ]


def test_handler_drops_extra_fields_json_cannot_carry(logger):
    target = RecordingTarget()
    logger.addHandler(HostLogHandler(target=target))
    logger.error("mixed", extra={"ok": 1, "obj": object(), "nan_ok": 1.5, "_private": 2})
    assert target.calls == [(40, "mixed", {"logger": "tests.sdk.plugin", "ok": 1, "nan_ok": 1.5})]


def test_handler_includes_the_traceback(logger):
    target = RecordingTarget()
    logger.addHandler(HostLogHandler(target=target))
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    ((level, message, _),) = target.calls
    assert level == logging.ERROR
    assert message.startswith("it failed\nTraceback (most recent call last):")
    assert message.endswith("ValueError: boom")


def test_handler_respects_its_level_and_formatter(logger):
    target = RecordingTarget()
    handler = HostLogHandler(logging.WARNING, target=target)
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    logger.addHandler(handler)
    logger.info("dropped")
    logger.warning("kept")
    assert target.calls == [(30, "[tests.sdk.plugin] kept", {"logger": "tests.sdk.plugin"})]


def test_handler_does_not_recurse_when_the_host_log_logs(logger, caplog):
    target = RecordingTarget(relog=True)
    handler = HostLogHandler(target=target)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logger.info("once")
    finally:
        root.removeHandler(handler)
    assert target.calls == [(20, "once", {"logger": "tests.sdk.plugin"})]
    # The host's own record still reaches the other handlers.
    assert [r.getMessage() for r in caplog.records] == ["once", "the host logs too"]


def test_handler_reports_host_failures_through_handle_error(logger, monkeypatch):
    target = RecordingTarget(fail=True)
    handler = HostLogHandler(target=target)
    failures = []
    monkeypatch.setattr(handler, "handleError", failures.append)
    logger.addHandler(handler)
    logger.info("lost")
    logger.info("lost too")
    assert [record.getMessage() for record in failures] == ["lost", "lost too"]


def test_root_handler_with_the_in_process_host(logger, root_handler, caplog):
    """The in-process host logs to `pyhost.host`, which propagates to the root handler:
    the record must come out once, not loop."""
    testing.configure()
    caplog.set_level(logging.DEBUG)
    logger.info("hello %s", "world", extra={"n": 1})
    forwarded = [r for r in caplog.records if r.name == "pyhost.host"]
    assert [(r.getMessage(), r.fields) for r in forwarded] == [
        ("hello world", {"logger": "tests.sdk.plugin", "n": 1})
    ]


def test_root_handler_with_the_embedded_host(fake, binding, logger, root_handler):
    testing.reset()
    from pyhost.host import _selected

    _selected._install(EmbeddedHost(binding))
    token = current.set(Placeholder(request_id="req-5"))
    try:
        logger.debug("in a request", extra={"order": "A-1"})
    finally:
        current.reset(token)
    assert fake.logs == [
        (0, 10, "in a request", "req-5", {"logger": "tests.sdk.plugin", "order": "A-1"})
    ]
