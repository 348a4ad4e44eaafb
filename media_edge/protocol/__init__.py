"""Wire formats: strict, bounded parsing of Twilio Media Streams; lenient parsing of Vapi JSON."""
