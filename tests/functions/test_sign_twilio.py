from functions import sign_twilio
from voicebridge import twilio_signature


def test_prints_the_signature_twilio_would_send(capsys):
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    args = [
        "CallSid=CA1234567890ABCDE",
        "Caller=+14158675309",
        "Digits=1234",
        "From=+14158675309",
        "To=+18005551212",
    ]
    assert sign_twilio.main(["--token", "12345", url, *args]) == 0
    assert capsys.readouterr().out.strip() == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_repeated_fields_are_signed_like_a_form(capsys):
    sign_twilio.main(["--token", "t", "https://x/y", "A=1", "A=2"])
    signature = capsys.readouterr().out.strip()
    assert twilio_signature.is_valid("t", "https://x/y", {"A": ["1", "2"]}, signature)
