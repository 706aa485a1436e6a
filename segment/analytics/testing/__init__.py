"""Test helpers: a scriptable local mock of Segment's Tracking API.

>>> from segment.analytics.testing import MockTrackingAPI, Reply
>>> with MockTrackingAPI() as api:  # doctest: +SKIP
...     api.script(Reply(503), Reply(429, headers={"Retry-After": "1"}))
...     ...  # point a client at api.url, then inspect api.events()
"""

from .mock_api import MockTrackingAPI, RecordedRequest, Reply, Rule, realistic_profile

__all__ = ["MockTrackingAPI", "RecordedRequest", "Reply", "Rule", "realistic_profile"]
