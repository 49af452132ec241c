"""The built .vst3 bundle in pedalboard (Spotify's Python wrapper around JUCE's VST3 host), headless.

Run by vst3_pedalboard.rs, which passes the bundle, the model folders and the latencies the plugin
must report:  python pedalboard_vst3.py BUNDLE TINY_MODEL DEFAULT_MODEL RATE:BLOCK=LATENCY...

pedalboard renders offline (VST3 kOffline) and compensates the reported latency itself, so with
the identity substitute the codec output must equal the input sample for sample: that checks the
reported latency in a third-party host.
"""

import os
import sys
import time

import numpy as np

bundle, tiny, default = sys.argv[1:4]
expected = {}
for arg in sys.argv[4:]:
    key, lat = arg.split("=")
    rate, block = key.split(":")
    expected[(int(rate), int(block))] = int(lat)

import pedalboard  # noqa: E402

failures = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def voice(rate, secs, max_hz=6000.0):
    """Band-limited speech-like signal: harmonics of a gliding f0 under a syllable envelope."""
    t = np.arange(int(rate * secs)) / rate
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    env = np.maximum(np.sin(2 * np.pi * 3.0 * t), 0.0) ** 0.7
    x = np.zeros_like(t)
    for h in range(1, int(max_hz / 150.0)):
        x += np.sin(h * phase) / h * (1 + 3 * np.exp(-(((h * 135) - 700) / 300.0) ** 2))
    return (0.12 * env * x).astype(np.float32)


def db(a, b):
    return 20 * np.log10(max(np.sqrt(np.mean(a.astype(np.float64) ** 2)), 1e-300)
                         / np.sqrt(np.mean(b.astype(np.float64) ** 2)))


def load(model):
    os.environ["FUNCODEC_MODEL"] = model
    return pedalboard.load_plugin(bundle)


# 1. Identity substitute: names, reported latency, alignment of codec and difference signals.
p = load("@identity")
names = list(p.parameters.keys())
print("plugin:", p.name, "parameters:", names)
check(p.name == "FunCodec Monitor", "plugin name")
# pedalboard appends the unit to the name.
for want in ["bitrate_bit_s", "monitor", "dry_wet", "output_gain_db", "packet_loss", "bypass",
             "status"]:
    check(want in names, f"parameter {want}")
mon = p.parameters["monitor"]
for (rate, block), lat in sorted(expected.items()):
    x = voice(rate, 1.5)
    stereo = np.stack([x, x[::-1].copy()])
    mon.raw_value = 0.0  # codec
    y = p.process(stereo, rate, buffer_size=block, reset=True)
    got = p.reported_latency_samples
    check(got == lat, f"{rate} Hz / {block}: reported latency {got} (expected {lat})")
    check(y.shape == stereo.shape, f"{rate} Hz: output shape {y.shape}")
    edge = 2000
    for c in range(2):
        r = db(y[c, edge:-edge] - stereo[c, edge:-edge], stereo[c])
        check(r < -60.0, f"{rate} Hz / {block} ch {c}: decoded (identity) vs input after "
              f"pedalboard's latency compensation: {r:.1f} dB")
    mon.raw_value = 1.0  # difference
    d = p.process(stereo, rate, buffer_size=block, reset=True)
    for c in range(2):
        r = db(d[c], stereo[c])
        check(r < -60.0, f"{rate} Hz / {block} ch {c}: difference signal {r:.1f} dB")

# 2. Tiny model: real coding at 48 kHz / 64, parameters, state through the host.
p = load(tiny)
x = voice(48000, 2.0)
stereo = np.stack([x, x])
y = p.process(stereo, 48000, buffer_size=64, reset=True)
check(bool(np.all(np.isfinite(y))), "tiny model: finite output")
check(db(y, stereo) > -40.0, f"tiny model: decoded level {db(y, stereo):.1f} dB re input")
check(p.parameters["status"].raw_value == 0.0, "status OK")
br = p.parameters["bitrate_bit_s"]
br.raw_value = 0.0
lo = p.process(stereo, 48000, buffer_size=64, reset=True)
br.raw_value = 1.0
hi = p.process(stereo, 48000, buffer_size=64, reset=True)
check(db(lo - hi, hi) > -60.0, "bitrate changes the sound")
state = p.raw_state
br.raw_value = 0.0
p.raw_state = state
check(abs(br.raw_value - 1.0) < 1e-6, f"raw_state round trip restores bitrate ({br.raw_value})")

# 3. Default model at 48 kHz, stereo, 64-sample blocks: faster than real time?
p = load(default)
secs = 10.0
x = voice(48000, secs)
stereo = np.stack([x, x[::-1].copy()])
p.process(stereo[:, :4800], 48000, buffer_size=64, reset=True)  # activation / model load
t = time.perf_counter()
y = p.process(stereo, 48000, buffer_size=64, reset=True)
wall = time.perf_counter() - t
print(f"default model in pedalboard, 48 kHz stereo, 64-sample blocks: {secs} s in {wall:.2f} s "
      f"(real-time factor {wall / secs:.3f}); latency {p.reported_latency_samples} samples",
      flush=True)
check(wall < secs, "faster than real time")
check(bool(np.all(np.isfinite(y))) and db(y, stereo) > -40.0, "default model output")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("all pedalboard checks passed")
