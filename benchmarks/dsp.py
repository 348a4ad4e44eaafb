"""DSP benchmarks (`make bench-dsp`): per-frame cost, resampler quality, VAD accuracy and CPU.

Compares media_edge.dsp with audioop (stdlib on 3.11/3.12, audioop-lts later), soxr, webrtcvad
and Silero VAD (its packaged ONNX model run with onnxruntime; no torch). Prints Markdown tables
for BENCHMARKS.md. Deterministic inputs: the committed espeak-ng speech sample plus seeded noise.

    python -m benchmarks.dsp [--quick] [--only cost|resampler|vad]
    python -m benchmarks.dsp --make-sample   # regenerate the speech sample (needs espeak-ng, soxr)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import tempfile
import time
import warnings
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from media_edge.dsp import StreamingResampler, Vad, ulaw_decode, ulaw_encode
from media_edge.dsp.vad import Debouncer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
SPEECH_WAV = Path(__file__).resolve().parent.parent / "tests/media_edge/dsp/data/speech_8k.wav"
SAMPLE_LINES = [
    ("en-us", "Hello, how can I help you today?"),
    ("en-us+f3", "I would like a table for two tomorrow."),
    ("en-gb", "Sure. What time suits you?"),
    ("en-us+f5", "Around seven thirty, please."),
    ("en-gb-x-rp+m3", "Yes, we have a table by the window."),
    ("en-us+f2", "Perfect. Send me a text to confirm."),
]
SAMPLE_GAP = 4000  # 0.5 s of digital zeros between utterances: how load_utterances splits them


# ---------------------------------------------------------------------------------------------
# The labelled VAD corpus


def make_sample(path: Path = SPEECH_WAV) -> None:
    """Synthesise the utterances with espeak-ng once; the result is committed (no espeak in CI)."""
    import soxr

    parts: list[np.ndarray] = []
    for voice, text in SAMPLE_LINES:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "u.wav"
            cmd = ["espeak-ng", "-v", voice, "-s", "175", "-w", str(out), text]
            subprocess.run(cmd, check=True)  # noqa: S603 - fixed argv, no shell
            with wave.open(str(out)) as w:
                rate = w.getframerate()
                x = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        y = soxr.resample(x.astype(np.float32) / 32768, rate, RATE, quality="VHQ")
        voiced = np.nonzero(np.abs(y) > 0.003)[0]
        y = y[voiced[0] : voiced[-1] + 1]
        y = y / np.abs(y).max() * 0.5
        parts += [np.rint(y * 32767).astype(np.int16), np.zeros(SAMPLE_GAP, np.int16)]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.concatenate(parts[:-1]).tobytes())


def load_utterances(path: Path = SPEECH_WAV) -> list[np.ndarray]:
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    zero = np.concatenate([[False], pcm == 0, [False]])
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= SAMPLE_GAP]
    bounds = [0, *[x for run in runs for x in run], len(pcm)]
    return [pcm[a:b] for a, b in zip(bounds[::2], bounds[1::2], strict=True)]


def _active_rms(x: np.ndarray) -> float:
    frames = x[: len(x) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    power = (frames**2).mean(axis=1)
    return float(np.sqrt(power[power > power.max() * 1e-3].mean()))


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum *= 1 / np.sqrt(np.maximum(freqs, 20.0))
    return np.fft.irfft(spectrum, n)


def _babble(n: int, rng: np.random.Generator, speech: np.ndarray) -> np.ndarray:
    """Six talkers at once (the sample, circularly shifted), like a busy room behind the caller."""
    reps = -(-n // len(speech)) + 1
    tiled = np.tile(speech.astype(np.float64), reps)
    out = np.zeros(n)
    for _ in range(6):
        start = int(rng.integers(0, len(speech)))
        out += tiled[start : start + n] * rng.uniform(0.6, 1.0)
    return out


@dataclass(frozen=True)
class Corpus:
    name: str
    ulaw: bytes  # what Twilio delivers
    pcm: np.ndarray  # the same, decoded
    labels: np.ndarray  # per 20 ms frame: 1 speech, 0 not, -1 don't care (around edges)


def build_corpus(noise: str, snr_db: float | None, seed: int = 7, repeats: int = 2) -> Corpus:
    """Utterances at -26 dBFS separated by 0.6-2.0 s pauses, plus noise at ``snr_db``, mu-law."""
    rng = np.random.default_rng(seed)
    utterances = load_utterances()
    pieces: list[np.ndarray] = [np.zeros(RATE)]  # 1 s of noise only to start
    spans: list[tuple[int, int]] = []
    at = RATE
    for _ in range(repeats):
        for utt in utterances:
            scaled = utt.astype(np.float64) * (10 ** (-26 / 20) * 32768 / _active_rms(utt))
            spans.append((at, at + len(scaled)))
            pause = np.zeros(int(rng.uniform(0.6, 2.0) * RATE))
            pieces += [scaled, pause]
            at += len(scaled) + len(pause)
    clean = np.concatenate(pieces)
    n = len(clean)
    if snr_db is None:
        noisy = clean + rng.standard_normal(n) * 3.0  # near-silent line noise (~ -80 dBFS)
    else:
        shape = {"white": lambda: rng.standard_normal(n), "pink": lambda: _pink(n, rng)}
        shape["babble"] = lambda: _babble(n, rng, np.concatenate(utterances))
        base = shape[noise]()
        speech_rms = 10 ** (-26 / 20) * 32768
        noisy = clean + base * (speech_rms / 10 ** (snr_db / 20) / np.sqrt(np.mean(base**2)))
    pcm16 = np.clip(np.rint(noisy), -32768, 32767).astype(np.int16)
    ulaw = ulaw_encode(pcm16)
    n_frames = n // FRAME
    labels = np.zeros(n_frames, np.int8)
    for start, end in spans:
        first, last = start // FRAME, (end - 1) // FRAME
        labels[first : last + 1] = 1
        labels[max(0, first - 1) : first + 3] = -1  # onset: +-a frame, plus the debounce
        tail = min(n_frames, last + 1 + 13)
        labels[last + 1 : tail] = np.where(labels[last + 1 : tail] == 1, 1, -1)  # hangover
    tag = "clean" if snr_db is None else f"{noise} {snr_db:g} dB"
    return Corpus(tag, ulaw[: n_frames * FRAME], ulaw_decode(ulaw)[: n_frames * FRAME], labels)


def corpora() -> Iterator[Corpus]:
    yield build_corpus("none", None)
    for noise in ("white", "pink", "babble"):
        for snr in (20, 10, 5, 0):
            yield build_corpus(noise, snr)


# ---------------------------------------------------------------------------------------------
# VAD contenders: each returns one raw speech/non-speech guess per 20 ms frame.


def vad_ours(c: Corpus) -> np.ndarray:
    vad = Vad(RATE)
    data = c.ulaw
    return np.array(
        [vad.process_ulaw(data[i : i + FRAME]).active for i in range(0, len(data), FRAME)]
    )


def vad_webrtc(mode: int) -> Callable[[Corpus], np.ndarray]:
    import webrtcvad

    def run(c: Corpus) -> np.ndarray:
        vad = webrtcvad.Vad(mode)
        raw = c.pcm.tobytes()
        step = 2 * FRAME
        return np.array([vad.is_speech(raw[i : i + step], RATE) for i in range(0, len(raw), step)])

    return run


class Silero:
    """Silero VAD v5 from the silero-vad wheel's ONNX file (the package's torch code is skipped)."""

    WINDOW, CONTEXT = 256, 32  # at 8 kHz: 32 ms windows with 4 ms of left context

    def __init__(self) -> None:
        import onnxruntime

        files = importlib.metadata.files("silero-vad") or []
        model = next(f for f in files if f.name == "silero_vad.onnx").locate()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(model), options)
        self.reset()

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros((1, self.CONTEXT), np.float32)

    def window(self, x: np.ndarray) -> float:
        chunk = np.concatenate([self.context, x.reshape(1, -1)], axis=1)
        feeds = {"input": chunk, "state": self.state, "sr": np.array(RATE, np.int64)}
        prob, self.state = self.session.run(None, feeds)
        self.context = chunk[:, -self.CONTEXT :]
        return float(prob[0, 0])

    def __call__(self, c: Corpus) -> np.ndarray:
        self.reset()
        x = c.pcm.astype(np.float32) / 32768
        probs = [self.window(x[i : i + self.WINDOW]) for i in range(0, len(x) - 255, self.WINDOW)]
        # Frame k (ending at sample 160(k+1)) takes the newest window finished by then.
        ends = (np.arange(len(c.labels)) + 1) * FRAME
        latest = ends // self.WINDOW - 1
        return np.where(latest >= 0, np.array(probs)[np.clip(latest, 0, None)] >= 0.5, False)


def debounce(raw: np.ndarray) -> np.ndarray:
    """The edge's own debouncing (60 ms onset, 240 ms hangover), applied to every contender."""
    d = Debouncer(3, 12)
    out = np.zeros(len(raw), bool)
    for i, active in enumerate(raw):
        d.update(bool(active))
        out[i] = d.speech
    return out


def f1(decisions: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    scored = labels >= 0
    truth, guess = labels[scored] == 1, decisions[: len(labels)][scored]
    tp = int(np.sum(guess & truth))
    precision = tp / max(1, int(guess.sum()))
    recall = tp / max(1, int(truth.sum()))
    return precision, recall, 2 * precision * recall / max(1e-9, precision + recall)


def vad_accuracy(contenders: dict[str, Callable[[Corpus], np.ndarray]]) -> list[str]:
    """Markdown: F1 per noise condition (debounced alike) and pooled precision/recall."""
    sets = list(corpora())
    lines = [
        "| condition | " + " | ".join(contenders) + " |",
        "|---|" + "---:|" * len(contenders),
    ]
    scores = {
        name: [f1(debounce(run(c)), c.labels) for c in sets] for name, run in contenders.items()
    }
    for i, c in enumerate(sets):
        lines.append(
            f"| {c.name} | " + " | ".join(f"{scores[n][i][2]:.3f}" for n in contenders) + " |"
        )
    for label, index in (("mean F1", 2), ("mean precision", 0), ("mean recall", 1)):
        cells = " | ".join(f"**{np.mean([s[index] for s in scores[n]]):.3f}**" for n in contenders)
        lines.append(f"| {label} | {cells} |")
    always = np.mean([f1(np.ones(len(c.labels), bool), c.labels)[2] for c in sets])
    frames = sum(int((c.labels >= 0).sum()) for c in sets)
    lines.append("")
    lines.append(
        f"{len(sets)} conditions, {frames} scored 20 ms frames; saying 'speech' on every frame "
        f"scores F1 {always:.3f}, so that is the floor, not zero."
    )
    return lines


# ---------------------------------------------------------------------------------------------
# Per-frame cost


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Median over 7 runs of the mean CPU cost of one call, in microseconds. Process CPU time,
    not wall time: the machine is shared, and time spent descheduled is not our cost."""
    fn()
    runs = []
    for _ in range(7):
        start = time.process_time()
        for _ in range(number):
            fn()
        runs.append((time.process_time() - start) / number * 1e6)
    return float(np.median(runs))


def frame_costs(number: int, silero: Silero | None) -> list[str]:
    import soxr
    import webrtcvad

    rng = np.random.default_rng(1)
    pcm8 = np.clip(rng.standard_normal(FRAME) * 3000, -32768, 32767).astype(np.int16)
    pcm16 = np.clip(rng.standard_normal(2 * FRAME) * 3000, -32768, 32767).astype(np.int16)
    ulaw = ulaw_encode(pcm8)
    raw8, raw16 = pcm8.tobytes(), pcm16.tobytes()
    up, down = StreamingResampler(8000, 16000), StreamingResampler(16000, 8000)
    sox = {
        q: (
            soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality=q),
            soxr.ResampleStream(16000, 8000, 1, dtype="int16", quality=q),
        )
        for q in ("QQ", "VHQ")
    }
    state: dict[str, Any] = {"up": None, "down": None}

    def ratecv_up() -> None:
        _, state["up"] = audioop.ratecv(raw8, 2, 1, 8000, 16000, state["up"])

    def ratecv_down() -> None:
        _, state["down"] = audioop.ratecv(raw16, 2, 1, 16000, 8000, state["down"])

    vad = Vad(RATE)
    web = webrtcvad.Vad(2)
    rows: list[tuple[str, str, Callable[[], object]]] = [
        ("mu-law decode, 160 B", "ours `ulaw_decode`", lambda: ulaw_decode(ulaw)),
        ("", "audioop `ulaw2lin`", lambda: audioop.ulaw2lin(ulaw, 2)),
        ("mu-law encode, 160 samples", "ours `ulaw_encode`", lambda: ulaw_encode(pcm8)),
        ("", "audioop `lin2ulaw` (+ `tobytes`)", lambda: audioop.lin2ulaw(pcm8.tobytes(), 2)),
        (
            "resample 8 -> 16 kHz, 160 samples",
            "ours `StreamingResampler`",
            lambda: up.process(pcm8),
        ),
        ("", "audioop `ratecv` (linear interp.)", ratecv_up),
        ("", "soxr stream QQ", lambda: sox["QQ"][0].resample_chunk(pcm8)),
        ("", "soxr stream VHQ", lambda: sox["VHQ"][0].resample_chunk(pcm8)),
        (
            "resample 16 -> 8 kHz, 320 samples",
            "ours `StreamingResampler`",
            lambda: down.process(pcm16),
        ),
        ("", "audioop `ratecv` (linear interp.)", ratecv_down),
        ("", "soxr stream QQ", lambda: sox["QQ"][1].resample_chunk(pcm16)),
        ("", "soxr stream VHQ", lambda: sox["VHQ"][1].resample_chunk(pcm16)),
        (
            "VAD, one 20 ms frame",
            "ours `Vad.process_ulaw` (mu-law in)",
            lambda: vad.process_ulaw(ulaw),
        ),
        ("", "ours `Vad.process` (int16 in)", lambda: vad.process(pcm8)),
        ("", "webrtcvad mode 2 (int16 in)", lambda: web.is_speech(raw8, RATE)),
        (
            "",
            "webrtcvad mode 2 incl. mu-law decode",
            lambda: web.is_speech(audioop.ulaw2lin(ulaw, 2), RATE),
        ),
        (
            "pcm16 mode inbound, whole frame",
            "decode + 8->16 kHz + `tobytes`",
            lambda: up.process(ulaw_decode(ulaw)).tobytes(),
        ),
        (
            "pcm16 mode outbound, whole frame",
            "`frombuffer` + 16->8 kHz + encode",
            lambda: ulaw_encode(down.process(np.frombuffer(raw16, np.int16))),
        ),
    ]
    lines = ["| operation | implementation | µs per 20 ms frame |", "|---|---|---:|"]
    for what, impl, fn in rows:
        lines.append(f"| {what} | {impl} | {per_call_us(fn, number):.2f} |")
    if silero is not None:
        window = np.zeros(Silero.WINDOW, np.float32)
        cost = per_call_us(lambda: silero.window(window), max(200, number // 50))
        lines.append(
            f"| | Silero v5 ONNX, 1 thread (per 32 ms window: {cost:.0f}) | {cost * 20 / 32:.1f} |"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Resampler quality: every contender is driven the same way, in 20 ms chunks, as a stream.


def _streamer(kind: str, in_rate: int, out_rate: int) -> Callable[[np.ndarray], np.ndarray]:
    if kind == "ours":
        return StreamingResampler(in_rate, out_rate).process
    if kind == "ratecv":
        state: list[Any] = [None]

        def ratecv(x: np.ndarray) -> np.ndarray:
            out, state[0] = audioop.ratecv(x.tobytes(), 2, 1, in_rate, out_rate, state[0])
            return np.frombuffer(out, np.int16)

        return ratecv
    import soxr

    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=kind)
    return stream.resample_chunk


def _stream(kind: str, x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    run = _streamer(kind, in_rate, out_rate)
    chunk = in_rate // 50
    return np.concatenate([run(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def _tone(freq: float, rate: int, seconds: float = 0.5, amplitude: float = 20000.0) -> np.ndarray:
    n = np.arange(int(rate * seconds))
    return np.rint(amplitude * np.sin(2 * np.pi * freq / rate * n)).astype(np.int16)


def _amplitude(y: np.ndarray, freq: float, rate: int) -> float:
    x = y[len(y) // 5 : len(y) * 9 // 10].astype(np.float64)  # steady state only
    window = np.hanning(len(x))
    phasor = np.sum(x * window * np.exp(-2j * np.pi * freq / rate * np.arange(len(x))))
    return float(abs(phasor) * 2 / window.sum())


def _thd_n_db(y: np.ndarray, freq: float, rate: int) -> float:
    x = y[len(y) // 5 : len(y) * 9 // 10].astype(np.float64)
    phase = 2 * np.pi * freq / rate * np.arange(len(x))
    basis = np.stack([np.sin(phase), np.cos(phase)])
    fitted = np.linalg.lstsq(basis.T, x, rcond=None)[0] @ basis
    return float(10 * np.log10(np.sum(fitted**2) / np.sum((x - fitted) ** 2)))


def _latency_ms(kind: str, in_rate: int, out_rate: int) -> float:
    """Time from a sample entering the stream to its image leaving it: the content shift of an
    impulse plus whatever the resampler holds back (soxr buffers; ours emits everything)."""
    x = np.zeros(in_rate // 2, np.int16)
    at = in_rate // 10
    x[at] = 20000
    y = _stream(kind, x, in_rate, out_rate)
    shift = np.argmax(np.abs(y.astype(int))) / out_rate - at / in_rate
    held = len(x) / in_rate - len(y) / out_rate
    return (shift + held) * 1000


def resampler_quality() -> list[str]:
    kinds = {
        "ours": "ours (57-tap polyphase)",
        "VHQ": "soxr VHQ",
        "QQ": "soxr QQ",
        "ratecv": "audioop ratecv",
    }
    lines = [
        "| direction | resampler | latency ms | passband ripple 0.1-3.4 kHz dB "
        "| stopband (>= 4.6 kHz) rejection dB | THD+N 1 kHz dB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    passband = [float(f) for f in range(100, 3401, 100)]
    for in_rate, out_rate in ((8000, 16000), (16000, 8000)):
        for kind, label in kinds.items():
            gains = [
                20
                * np.log10(
                    _amplitude(_stream(kind, _tone(f, in_rate), in_rate, out_rate), f, out_rate)
                    / 20000
                )
                for f in passband
            ]
            if in_rate < out_rate:  # image of f lands at 8000 - f
                probes = [(f, 8000 - f) for f in passband]
            else:  # a 4.6-7.9 kHz tone aliases to 8000 - f
                probes = [(float(f), 8000.0 - f) for f in range(4600, 7901, 100)]
            leak = max(
                _amplitude(_stream(kind, _tone(f, in_rate), in_rate, out_rate), g, out_rate)
                for f, g in probes
            )
            thd = _thd_n_db(
                _stream(kind, _tone(1000, in_rate, 1.0), in_rate, out_rate), 1000, out_rate
            )
            lines.append(
                f"| {in_rate // 1000} -> {out_rate // 1000} kHz | {label} | "
                f"{_latency_ms(kind, in_rate, out_rate):.2f} | {max(gains) - min(gains):.2f} | "
                f"{-20 * np.log10(max(leak, 1e-3) / 20000):.1f} | {thd:.1f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing iterations")
    parser.add_argument("--only", choices=["cost", "resampler", "vad"])
    parser.add_argument("--make-sample", action="store_true", help="regenerate the speech sample")
    args = parser.parse_args()
    if args.make_sample:
        make_sample()
        return
    try:
        silero: Silero | None = Silero()
    except (ImportError, StopIteration) as exc:  # silero-vad is installed by `make bench-dsp`
        print(f"Silero unavailable ({exc!r}): pip install --no-deps silero-vad onnxruntime")
        silero = None
    if args.only in (None, "cost"):
        print("\n".join(frame_costs(2000 if args.quick else 20000, silero)), "\n")
    if args.only in (None, "resampler"):
        print("\n".join(resampler_quality()), "\n")
    if args.only in (None, "vad"):
        contenders: dict[str, Callable[[Corpus], np.ndarray]] = {"ours (energy)": vad_ours}
        for mode in (1, 3):
            contenders[f"webrtcvad {mode}"] = vad_webrtc(mode)
        if silero is not None:
            contenders["Silero v5"] = silero
        print("\n".join(vad_accuracy(contenders)))


if __name__ == "__main__":
    main()
