"""The messages of the six calls: each builder checks its arguments and returns the message to send.

Pure functions, no I/O: misuse raises :class:`~segment.analytics.errors.ArgumentError` naming the field,
in the caller's thread. ``Client.track`` and friends take exactly these arguments (same names, same
positional order as analytics-python) and queue what the builder returns.

Field order is chosen for gzip: constant and random fields interleaved compress best across a batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from segment.analytics import message

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")

__all__ = ["alias", "group", "identify", "page", "screen", "track"]

Message = dict[str, Any]
Mapping = Optional[dict[str, Any]]


def identify(
    user_id: Any = None,
    traits: Mapping = None,
    context: Mapping = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Mapping = None,
    message_id: Any = None,
) -> Message:
    """Record who the user is and their traits."""
    uid, aid = message.require_user(user_id, anonymous_id)
    traits = message.mapping("traits", traits)
    ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
    return {
        "integrations": integ,
        "messageId": mid,
        "traits": traits,
        "timestamp": stamp,
        "anonymousId": aid,
        "context": ctx,
        "type": "identify",
        "userId": uid,
    }


def track(
    user_id: Any = None,
    event: Optional[str] = None,
    properties: Mapping = None,
    context: Mapping = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Mapping = None,
    message_id: Any = None,
) -> Message:
    """Record an action the user performed."""
    uid, aid = message.require_user(user_id, anonymous_id)
    event = message.require_event(event)
    properties = message.mapping("properties", properties)
    ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
    return {
        "integrations": integ,
        "messageId": mid,
        "properties": properties,
        "timestamp": stamp,
        "anonymousId": aid,
        "context": ctx,
        "type": "track",
        "userId": uid,
        "event": event,
    }


def alias(
    previous_id: Any = None,
    user_id: Any = None,
    context: Mapping = None,
    timestamp: Any = None,
    integrations: Mapping = None,
    message_id: Any = None,
) -> Message:
    """Merge two user identities."""
    previous = message.require_id("previous_id", previous_id)
    uid = message.id_string("user_id", user_id, required=True)
    ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
    return {
        "integrations": integ,
        "messageId": mid,
        "previousId": previous,
        "timestamp": stamp,
        "context": ctx,
        "type": "alias",
        "userId": uid,
    }


def group(
    user_id: Any = None,
    group_id: Any = None,
    traits: Mapping = None,
    context: Mapping = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Mapping = None,
    message_id: Any = None,
) -> Message:
    """Associate the user with a group (an account, a company)."""
    uid, aid = message.require_user(user_id, anonymous_id)
    gid = message.require_id("group_id", group_id)
    traits = message.mapping("traits", traits)
    ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
    return {
        "integrations": integ,
        "messageId": mid,
        "traits": traits,
        "timestamp": stamp,
        "anonymousId": aid,
        "groupId": gid,
        "context": ctx,
        "type": "group",
        "userId": uid,
    }


def page(
    user_id: Any = None,
    category: Optional[str] = None,
    name: Optional[str] = None,
    properties: Mapping = None,
    context: Mapping = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Mapping = None,
    message_id: Any = None,
) -> Message:
    """Record a page view."""
    uid, aid = message.require_user(user_id, anonymous_id)
    name = message.optional_str("name", name)
    category = message.optional_str("category", category)
    properties = message.mapping("properties", properties)
    ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
    return {
        "integrations": integ,
        "messageId": mid,
        "properties": properties,
        "timestamp": stamp,
        "anonymousId": aid,
        "category": category,
        "context": ctx,
        "type": "page",
        "userId": uid,
        "name": name,
    }


def _as(kind: str, build: Callable[P, Message], doc: str) -> Callable[P, Message]:
    """``build``'s arguments and checks, for a message of type ``kind``."""

    def builder(*args: P.args, **kwargs: P.kwargs) -> Message:
        msg = build(*args, **kwargs)
        msg["type"] = kind
        return msg

    builder.__name__ = builder.__qualname__ = kind
    builder.__doc__ = doc
    builder.__wrapped__ = build  # type: ignore[attr-defined]  # inspect.signature shows build's arguments
    return builder


screen = _as("screen", page, "Record a mobile screen view (the same arguments as ``page``).")
