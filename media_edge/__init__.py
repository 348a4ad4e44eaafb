"""The media edge: Twilio Media Streams <-> Vapi WebSocket transport (python -m media_edge)."""
