"""``python -m infra.vapi_emulator``: the Vapi emulator alone, in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal

from infra.vapi_emulator import Script, VapiEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="REST port (0 = any free port)")
    parser.add_argument("--api-key", help="the Bearer key clients must send (default: generated)")
    parser.add_argument("--webhook-secret", help="sign server-URL webhooks with this secret")
    parser.add_argument(
        "--webhook-auth", choices=["hmac", "secret", "bearer", "none"], default="hmac"
    )
    parser.add_argument(
        "--webhook-credential",
        help="an authenticationPlan as in Vapi's schema, JSON without the secret, e.g. "
        '\'{"type": "hmac", "algorithm": "sha512", "signatureEncoding": "base64"}\'',
    )
    parser.add_argument("--think-ms", type=int, default=300, help="turn end -> reply audio")
    parser.add_argument("--reply", choices=["parrot", "synth"], default="parrot")
    args = parser.parse_args(argv)
    api_key = args.api_key or f"emulator-{secrets.token_hex(12)}"
    emulator = VapiEmulator(
        api_key,
        port=args.port,
        webhook_secret=args.webhook_secret,
        webhook_auth=json.loads(args.webhook_credential)
        if args.webhook_credential
        else args.webhook_auth,
        script=Script(think_ms=args.think_ms, reply=args.reply),
    )
    asyncio.run(_serve(emulator, api_key))
    return 0


async def _serve(emulator: VapiEmulator, api_key: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await emulator.start()
    print(f"Vapi emulator on {emulator.base_url}  (VAPI_API_KEY={api_key})", flush=True)
    await stop.wait()
    await emulator.stop()


if __name__ == "__main__":
    raise SystemExit(main())
