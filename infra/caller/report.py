"""Human-readable output for a CallReport: the timeline and the latency table."""

from __future__ import annotations

from statistics import median

from infra.caller.session import CallReport


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def timeline(report: CallReport) -> str:
    lines = [f"Call {report.call_sid}  (stream {report.stream_sid})"]
    lines.append(f"  {'-':>9}  voice webhook answered TwiML in {report.twiml_ms:.0f} ms")
    lines += [f"  {t / 1000:8.2f}s  {text}" for t, text in report.timeline]
    return "\n".join(lines)


def latency_table(report: CallReport) -> str:
    def row(name: str, values: list[float], meaning: str) -> str:
        shown = _ms(median(values)) if values else "-"
        count = f"n={len(values)}" if len(values) > 1 else ""
        return f"| {name:<26} | {shown:>9} {count:<4} | {meaning} |"

    rows = [
        "| latency (caller's ear)     | value          | from -> to |",
        "| -------------------------- | -------------- | ---------- |",
        row("voice webhook (TwiML)", [report.twiml_ms], "POST /twilio/voice -> TwiML"),
        row(
            "first audio",
            [report.first_audio_ms] if report.first_audio_ms is not None else [],
            "stream start -> greeting heard",
        ),
        row("response", report.response_ms, "caller stops talking -> reply heard"),
        row("barge-in -> clear", report.barge_in_to_clear_ms, "caller talks over -> clear"),
        row(
            "barge-in -> silence",
            report.barge_in_to_silence_ms,
            "caller talks over -> assistant inaudible",
        ),
    ]
    return "\n".join(rows)


def summary(report: CallReport) -> str:
    callbacks = ", ".join(f"{name}:{code}" for name, code in report.status_callbacks) or "-"
    if report.call_duration_s is not None:
        callbacks += f" (CallDuration {report.call_duration_s} s)"
    lines = [
        f"ended by: {report.ended_by} (stream close code {report.close_code})",
        f"heard: {report.heard_speech_ms() / 1000:.1f} s of assistant speech in "
        f"{len(report.heard) / 8000:.1f} s; marks echoed {report.marks_echoed}; clears "
        f"{report.clears} ({report.cleared_ms:.0f} ms of buffered audio dropped)",
        f"status callbacks: {callbacks}",
    ]
    if report.protocol_errors:
        lines.append("PROTOCOL ERRORS: " + "; ".join(report.protocol_errors))
    return "\n".join(lines)
