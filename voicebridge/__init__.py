"""Code both deployables import: config, stream token, Twilio signatures, telemetry names."""
