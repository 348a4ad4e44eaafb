"""An example domain tool: copy this file to add your own (then import it in tools/__init__).

A tool is an ``async`` function registered with ``@tool(name)``; ``name`` must match the
function name in the assistant's ``model.tools`` (see ``functions.admin``). Validate arguments
with a pydantic model, raise ``ToolError`` with a sentence the assistant may read to the caller,
return a short string (or a small dict, sent as one-line JSON). The runner enforces the timeout.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError

from functions.tools.registry import ToolContext, ToolError, tool

# Stand-in for your system of record (a database, an internal API through ctx.http(), ...).
_ORDERS = {"1001": "shipped on Monday", "1002": "being packed", "1003": "delivered"}


class OrderQuery(BaseModel):
    order_id: str = Field(pattern=r"^\d{3,12}$", description="the order number the caller reads")


@tool(
    "order_status",
    "Look up the delivery status of an order by its number.",
    OrderQuery.model_json_schema(),
)
async def order_status(ctx: ToolContext, args: dict[str, Any]) -> str:
    try:
        query = OrderQuery.model_validate(args)
    except ValidationError:
        raise ToolError("I need the order number, digits only.") from None
    status = _ORDERS.get(query.order_id)
    if status is None:
        raise ToolError(f"I could not find order {query.order_id}.")
    return f"Order {query.order_id} is {status}."
