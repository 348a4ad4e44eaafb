"""What the outbound store does with DynamoDB's answers that are not decisions."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from functions.outbound.store import ContactItem, OutboundStore


class Transactions:
    """A DynamoDB client whose TransactWriteItems answers from a script."""

    def __init__(self, *answers: list[str] | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    def transact_write_items(self, TransactItems):
        self.calls += 1
        codes = self.answers.pop(0)
        if codes is None:
            return {}
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                "CancellationReasons": [{"Code": c} for c in codes],
            },
            "TransactWriteItems",
        )


CONTACT = ContactItem("c1", 0, "+14155550100", "pending", version=3, attempts=0)


def claim(client) -> str:
    return OutboundStore("t", client=client).claim(CONTACT, 4, "c1.0.ab", 1000.0, 1100.0)


def test_a_conflict_with_another_transaction_is_retried(monkeypatch):
    monkeypatch.setattr("functions.outbound.store.time.sleep", lambda s: None)
    client = Transactions(["None", "TransactionConflict"], None)
    assert claim(client) == "claimed"
    assert client.calls == 2


def test_conditions_that_fail_are_answers_not_errors():
    assert claim(Transactions(["ConditionalCheckFailed", "None"])) == "stale"
    assert claim(Transactions(["None", "ConditionalCheckFailed"])) == "blocked"


def test_persistent_conflicts_and_other_failures_are_raised(monkeypatch):
    monkeypatch.setattr("functions.outbound.store.time.sleep", lambda s: None)
    with pytest.raises(ClientError):
        claim(Transactions(*[["TransactionConflict", "None"]] * 4))
    with pytest.raises(ClientError):
        claim(Transactions(["ThrottlingError", "None"]))
