from voicebridge import twilio_signature

# twilio-python's public test vector (tests/unit/test_request_validator.py).
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_public_vector():
    assert twilio_signature.sign("12345", URL, PARAMS) == EXPECTED
    assert twilio_signature.is_valid("12345", URL, PARAMS, EXPECTED)


def test_port_variants_are_accepted():
    assert twilio_signature.is_valid(
        "12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS, EXPECTED
    )


def test_tampered_or_missing_signature_fails():
    assert not twilio_signature.is_valid("12345", URL, {**PARAMS, "Digits": "9"}, EXPECTED)
    assert not twilio_signature.is_valid("12345", URL, PARAMS, None)
    assert not twilio_signature.is_valid("wrong", URL, PARAMS, EXPECTED)
    assert not twilio_signature.is_valid("12345", URL, PARAMS, "A" * 500)


def test_repeated_form_values_are_each_signed():
    params = {"To": "+1", "Tag": ["b", "a"]}
    signature = twilio_signature.sign("t", "https://x.test/v", params)
    assert twilio_signature.is_valid("t", "https://x.test/v", params, signature)
    assert not twilio_signature.is_valid(
        "t", "https://x.test/v", {"To": "+1", "Tag": ["a"]}, signature
    )


def test_websocket_upgrade_with_and_without_trailing_slash():
    signature = twilio_signature.sign("t", "wss://edge.test/media", {})
    assert twilio_signature.is_valid_upgrade("t", "wss://edge.test/media", signature)
    slash = twilio_signature.sign("t", "wss://edge.test/media/", {})
    assert twilio_signature.is_valid_upgrade("t", "wss://edge.test/media", slash)
    assert not twilio_signature.is_valid_upgrade("t", "wss://other.test/media", signature)
