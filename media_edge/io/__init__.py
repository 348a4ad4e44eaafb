"""Thin asyncio shells: the per-call session (both sockets + timer), telemetry, ECS protection."""
