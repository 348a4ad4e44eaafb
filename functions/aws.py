"""boto3 clients, one per service and endpoint for the life of the process, made on first use.

Importing boto3 costs more than the rest of the API's imports together, so it happens on the first
request that needs AWS rather than at module import; the lock keeps concurrent first requests
(uvicorn locally) from building two clients (boto3 sessions are not thread-safe to create).
"""

from __future__ import annotations

import threading
from typing import Any

_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()


def client(service: str, endpoint_url: str | None) -> Any:
    """The shared client for ``service`` (``endpoint_url`` set only for the local stack)."""
    key = (service, endpoint_url)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.get(key)
            if found is None:
                import boto3

                found = boto3.session.Session().client(service, endpoint_url=endpoint_url)
                _clients[key] = found
    return found


def reset() -> None:
    """Forget every client (after a SnapStart restore: functions/snapstart.py); the next use
    makes new ones, with the credentials and connections of the restored environment."""
    with _lock:
        _clients.clear()
