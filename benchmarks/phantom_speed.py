"""Print how many phantom frames per second one CPU core renders at 128 px.

Run: python benchmarks/phantom_speed.py [--size 128] [--frames 200]
"""

from __future__ import annotations

import argparse
import os
import time

# Pin BLAS/FFT thread pools before numpy loads: the target is one core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from sonosynth.data.phantom import CLASSES, simulate_patient


def frames_per_second(size: int, frames_per_patient: int, patients_per_class: int) -> float:
    # Includes the per-patient setup (scene, scan-conversion map), as a dataset build would.
    start = time.perf_counter()
    n = 0
    for label in CLASSES:
        for patient in range(patients_per_class):
            n += len(simulate_patient(label, patient, frames_per_patient, size, seed=0))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=20, help="frames per patient")
    parser.add_argument("--patients", type=int, default=4, help="patients per class")
    args = parser.parse_args()
    simulate_patient(CLASSES[0], 0, 1, args.size, seed=0)  # warm-up: imports, caches
    fps = frames_per_second(args.size, args.frames, args.patients)
    print(f"{fps:.1f} frames/s at {args.size} px ({args.frames} frames x {args.patients} patients x {len(CLASSES)} classes)")


if __name__ == "__main__":
    main()
