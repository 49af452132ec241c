#!/usr/bin/env python3
"""Makes a bank of simulated room impulse responses for make_corpus.py --rirs.

Usage: make_rirs.py N OUT.npy [--seed S]. Writes float32 [N, L] at 16 kHz, each row aligned to its
direct-path peak and zero-padded to the longest. Image-source shoebox rooms 3-10 x 3-8 x 2.4-4 m,
RT60 0.15-0.9 s (pyroomacoustics). About 0.17 CPU-s per RIR."""
import argparse
import numpy as np
import pyroomacoustics as pra

FS = 16000


def one_rir(rng):
    while True:
        dims = rng.uniform([3, 3, 2.4], [10, 8, 4])
        rt60 = rng.uniform(0.15, 0.9)
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:
            continue  # that RT60 cannot be reached in that room: draw again
        # max_order is kept as inverse_sabine returns it: capping it shortens the reverb a lot.
        room = pra.ShoeBox(dims, fs=FS, materials=pra.Material(absorption), max_order=max_order)
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        h = np.asarray(room.rir[0][0], np.float64)
        h = h[max(int(np.argmax(np.abs(h))) - 16, 0):]  # drop the propagation delay
        tail = np.cumsum((h ** 2)[::-1])[::-1]  # energy left after each sample (Schroeder)
        h = h[:max(int(np.sum(tail > 1e-6 * tail[0])), 1)]  # cut the inaudible tail below -60 dB
        return (h / np.abs(h).max()).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    rirs = [one_rir(rng) for _ in range(a.n)]
    bank = np.zeros((a.n, max(len(h) for h in rirs)), np.float32)
    for i, h in enumerate(rirs):
        bank[i, :len(h)] = h
    np.save(a.out, bank)
    print(f"{a.out}: {a.n} RIRs, up to {bank.shape[1] / FS:.2f} s, {bank.nbytes / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
