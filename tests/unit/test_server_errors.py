"""The signaling server's error classes live in pyapp/exceptions.py too (one exceptions module)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from pyapp import exceptions
from pyapp.exceptions import LimitExceeded, PyAppError, SignalingServerError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _defines_exception(node: ast.ClassDef) -> bool:
    for base in node.bases:
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        if name.endswith(("Error", "Exception", "Exceeded", "Exhausted", "Full", "Timeout",
                          "Unavailable")):
            return True
    return False


def test_no_error_class_in_the_server() -> None:
    stray = []
    for path in sorted((ROOT / "web").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and _defines_exception(node):
                stray.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert stray == []


def test_broker_errors_are_the_exceptions_module_classes() -> None:
    from web import broker, redis_broker

    for name in ("RoomFull", "UnknownPeer", "BrokerUnavailable"):
        cls = getattr(exceptions, name)
        assert name in exceptions.__all__
        assert getattr(broker, name) is cls, name  # `from web.broker import RoomFull` still works
        assert issubclass(cls, SignalingServerError) and issubclass(cls, PyAppError)
        assert getattr(redis_broker, name) is cls, name
    assert issubclass(exceptions.RoomFull, LimitExceeded)


def test_in_memory_broker_raises_them_with_clear_messages() -> None:
    asyncio.run(_broker_refuses())


async def _broker_refuses() -> None:
    from web.broker import InMemoryBroker

    async def deliver(_msg: object) -> None:
        return None

    b = InMemoryBroker(max_peers_per_room=1)
    peer, _ = await b.join("lobby", None, deliver)
    with pytest.raises(exceptions.RoomFull) as full:
        await b.join("lobby", None, deliver)
    assert "lobby" in str(full.value)
    with pytest.raises(exceptions.UnknownPeer) as unknown:
        await b.relay("lobby", peer, "nobody", {"x": 1})
    assert "nobody" in str(unknown.value)
