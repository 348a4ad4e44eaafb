"""The dialer's queue: "tick" messages that wake one campaign's dialer, optionally delayed.

``{"v": 1, "campaignId": "...", "at"?: epoch_s}``. SQS delays a message at most 900 s
(https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-delay-queues.html),
so a tick for later than that is re-sent on arrival with the rest of the wait (``at``).
Ticks carry no work: the dialer reads what to do from DynamoDB, so a duplicate, a late or a lost
tick changes nothing but when the work happens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from functions import aws

VERSION: Final = 1
MAX_DELAY_SECONDS: Final = 900


class TickError(ValueError):
    """An SQS body that is not a tick."""


@dataclass(frozen=True, slots=True)
class Tick:
    campaign_id: str
    at: int | None = None

    def to_json(self) -> str:
        body: dict[str, Any] = {"v": VERSION, "campaignId": self.campaign_id}
        if self.at is not None:
            body["at"] = self.at
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> Tick:
        try:
            data = json.loads(body)
            campaign_id = data["campaignId"]
            at = data.get("at")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TickError("not a tick") from None
        if data.get("v") != VERSION or not isinstance(campaign_id, str) or not campaign_id:
            raise TickError("unknown tick version or campaign")
        if at is not None and type(at) is not int:
            raise TickError("tick time is not an integer")
        return cls(campaign_id, at)


class DialerQueue:
    def __init__(self, queue_url: str, endpoint_url: str | None = None, client: Any = None) -> None:
        self.queue_url = queue_url
        self._endpoint_url = endpoint_url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("sqs", self._endpoint_url)
        return self._client

    def tick(self, campaign_id: str, delay_s: float = 0, at: float | None = None) -> None:
        delay = max(0, min(MAX_DELAY_SECONDS, round(delay_s)))
        tick = Tick(campaign_id, int(at) if at is not None else None)
        self.client.send_message(
            QueueUrl=self.queue_url, MessageBody=tick.to_json(), DelaySeconds=delay
        )


@cache
def get_dialer_queue(queue_url: str, endpoint_url: str | None) -> DialerQueue:
    """One per queue and endpoint for the process (its client is made on first use)."""
    return DialerQueue(queue_url, endpoint_url)
