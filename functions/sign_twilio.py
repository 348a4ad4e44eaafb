"""Print the ``X-Twilio-Signature`` Twilio would send, for trying the API with curl.

    python -m functions.sign_twilio --token "$TWILIO_AUTH_TOKEN" \\
        "$PUBLIC_BASE_URL/twilio/voice" CallSid=CA0123... From=+14155550123 To=+15550100002

The URL must be exactly the one curl requests (scheme, host, port, path, query) and the
``name=value`` pairs exactly the form fields curl posts.
"""

from __future__ import annotations

import argparse
import sys

from voicebridge.twilio_signature import sign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.sign_twilio", description=__doc__)
    parser.add_argument("--token", required=True, help="the Twilio auth token")
    parser.add_argument("url", help="the full URL the request goes to")
    parser.add_argument("params", nargs="*", metavar="name=value", help="form fields")
    args = parser.parse_args(argv)
    params: dict[str, list[str]] = {}
    for pair in args.params:
        name, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"expected name=value, got {pair!r}")
        params.setdefault(name, []).append(value)
    print(sign(args.token, args.url, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
