#!/usr/bin/env bash
# Acceptance of issue #16: both paper configs pass `--dry-run --probe` on this machine.
# fetal-paper runs on a small folder in the FETAL_PLANES_DB layout written here (random images, 12 patients);
# lung-paper on the real POCUS data (POCUS=path, default ../shared/data/pocus from the repository).
# Everything is written under a fresh /tmp folder. Runs torch, so on a shared machine take the CPU lock:
#   flock /tmp/sonosynth-cpu.lock bash scripts/acceptance/issue-16.sh > /tmp/accept16.log 2>&1
set -u
TREE=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-python}
POCUS=${POCUS:-$TREE/../shared/data/pocus}
export PYTHONPATH="$TREE/src${PYTHONPATH:+:$PYTHONPATH}" COLUMNS=200 NO_COLOR=1 TERM=dumb
W=$(mktemp -d /tmp/accept16.XXXXXX)
cd "$W" || exit 1

$PY - <<'PY'
"""A FETAL_PLANES_DB-shaped folder: the semicolon CSV with the published header and Images/*.png."""
from pathlib import Path

import numpy as np

from sonosynth.data.images import save_png

planes = ["Fetal abdomen", "Fetal brain", "Fetal femur", "Fetal thorax", "Maternal cervix", "Other"]
root = Path("fetal-db")
(root / "Images").mkdir(parents=True)
rng = np.random.default_rng(0)
lines = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "]
for patient in range(12):
    for k, plane in enumerate(planes):
        name = f"Patient{patient:05d}_Plane{k}_1_of_1"
        save_png(root / "Images" / f"{name}.png", rng.integers(0, 255, (120, 160), dtype=np.uint8))
        brain = "Trans-thalamic" if plane == "Fetal brain" else "Not A Brain"
        lines.append(f"{name};{patient};{plane};{brain};Op. 1;Voluson E6;{0 if patient % 4 == 0 else 1}")
(root / "FETAL_PLANES_DB_data.csv").write_text("\n".join(lines) + "\n")
print(f"wrote {root}: {len(lines) - 1} images of 12 patients, {len(planes)} planes")
PY

for spec in ${SPECS:-fetal-paper lung-paper}; do
  data=$W/fetal-db
  [ "$spec" = lung-paper ] && data=$POCUS
  echo
  echo "=============================== sonosynth run configs/$spec.yaml --dry-run --probe --data $data"
  /usr/bin/time -f "[wall %e s, peak RSS of the CLI process %M KB]" \
    $PY -m sonosynth run "$TREE/configs/$spec.yaml" --dry-run --probe --data "$data" --out "$W/$spec" 2>&1
  echo "[exit $?]"
done
