"""Sans-I/O core: the per-call state machine. Events in, actions out; no sockets, no clock reads.

The asyncio shell (media_edge.io) parses wire messages into events, feeds them with the current
monotonic time in ms, and executes the returned actions in order.
"""

from media_edge.core.call import Call, CallConfig, State

__all__ = ["Call", "CallConfig", "State"]
