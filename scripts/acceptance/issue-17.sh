#!/usr/bin/env bash
# Acceptance of issue #17: for each numbered defect, the command that showed it and what it prints now.
# Everything happens in a fresh folder under /tmp; nothing outside it is touched.
# Runs torch, so on a shared machine take the CPU lock:
#   flock /tmp/sonosynth-cpu.lock bash scripts/acceptance/issue-17.sh > /tmp/accept17.log 2>&1
set -u
TREE=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-python}
export PYTHONPATH="$TREE/src${PYTHONPATH:+:$PYTHONPATH}" COLUMNS=110 NO_COLOR=1 TERM=dumb
W=$(mktemp -d /tmp/accept17.XXXXXX)
cd "$W" || exit 1

ss() {  # run a sonosynth command, show it and its exit code
  echo "\$ sonosynth $*"
  $PY -m sonosynth "$@" 2>&1
  echo "[exit $?]"
}
section() { echo; echo "=============================== $*"; }
pngs() { find "$@" -name '*.png' | wc -l; }

section "setup: a user's own image folder (phantom frames copied out of a sonosynth output)"
$PY -m sonosynth -q phantom --out phantom --patients 3,3,3 --frames 2 --size 48 > /dev/null 2>&1
cp -r phantom/frames mine
echo "mine/: $(pngs mine) images in $(ls mine | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------------------- 1
section "1. data loss: --out equal to or inside the source, --overwrite on a folder sonosynth did not write"
ss ingest folder mine --out mine --overwrite --size 32
ss ingest folder mine --out mine/frames-out --overwrite --size 32
mkdir -p notes && echo "my notes" > notes/todo.txt
ss ingest folder mine --out notes --overwrite --size 32
ss phantom --out notes --overwrite --size 32 --patients 1,1,1 --frames 1
ss ingest folder mine --out ingested --size 32 -q
ss ingest folder mine --out ingested --size 32 --overwrite -q
echo "after all of it: mine/ holds $(pngs mine) images, notes/todo.txt says '$(cat notes/todo.txt)'," \
     "mine/ has no new folder: $(ls mine | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------------------- 2
section "2. absolute paths in a CSV listing, the CSV named absolutely and relatively"
mkdir -p lists
one=$(find "$W/mine/covid" -name '*.png' | sort | head -1)
two=$(find mine/healthy -name '*.png' | sort | head -1)
printf 'path,label,patient_id\n%s,covid,p1\n../%s,healthy,p2\n' "$one" "$two" > lists/study.csv
cat lists/study.csv
(cd / && ss ingest folder "$W/lists/study.csv" --out "$W/listed-abs" --size 32 -q)
(cd lists && ss ingest folder study.csv --out ../listed-rel --size 32 -q)
cut -d, -f1-4 listed-rel/manifest.csv

# ---------------------------------------------------------------------------------------------------------- 3
section "3. a tiny study (smoke presets), then its cached units damaged and the study run again"
$PY - <<EOF
import yaml
from sonosynth.config import preset_values
yaml.safe_dump(preset_values("classifier", "smoke"), open("classifier.yaml", "w"))
EOF
cat > study.yaml <<EOF
name: accept17
data: {phantom: {patients: {covid: 3, pneumonia: 3, healthy: 3}, frames: 2, size: 48}}
split: {folds: 3, minority: pneumonia, keep: [1.0], run_folds: [0]}
generators:
  - {name: SinGAN, kind: singan, preset: smoke, max_models: 2, samples_per_model: 3}
regimes: [real, real+synthetic]
classifiers: [{model: small_cnn, preset: $W/classifier.yaml}]
quality: {enabled: true, features: classifier, preset: smoke, reader: false}
EOF
ss -q run study.yaml --out run
metrics=$(ls run/cache/classify/*/metrics.json | sort)
first=$(echo "$metrics" | sed -n 1p); second=$(echo "$metrics" | sed -n 2p)
quality=$(ls run/cache/quality/*/quality.csv | head -1)
head -c 40 "$first" > "$first.cut" && mv "$first.cut" "$first"                      # truncated JSON
sed -i 's/"balanced_accuracy"/"balanced"/' "$second"                                  # a key missing
printf '"unterminated\n' | cat - "$quality" > "$quality.bad" && mv "$quality.bad" "$quality"  # parser error
echo "damaged: ${first#run/}, ${second#run/}, ${quality#run/}"
ss run study.yaml --out run 2>&1 | grep -E "damaged|recomput|units computed|exit|Traceback|Error" | sed "s#$W/##g"

# ---------------------------------------------------------------------------------------------------------- 4
section "4. stale cache: the classifier preset file edited (learning_rate halved), the study run again"
ss run study.yaml --out run 2>&1 | grep -E "units computed|exit"
sed -i 's/^learning_rate: .*/learning_rate: 0.001/' classifier.yaml
grep learning_rate classifier.yaml
ss run study.yaml --out run 2>&1 | grep -E "units computed|exit"

# ---------------------------------------------------------------------------------------------------------- 5
section "5. checkpoint parents: train from one folder with relative paths, generate from another"
img=$(find ingested/frames/covid -name '*.png' | sort | head -1)
ss -q train singan "$img" --out ckpt --preset smoke --label covid
(cd / && ss -q generate singan "$W/ckpt" --out "$W/elsewhere/samples" -n 2)
$PY - "$W" <<'EOF'
import json, sys
from pathlib import Path
import pandas as pd
w = Path(sys.argv[1])
record = json.loads((w / "ckpt" / "generator.json").read_text())
print("generator.json training images:", [(i["path"], (w / "ckpt" / i["path"]).resolve().is_file())
                                          for i in record["training_images"]])
for manifest in [w / "elsewhere/samples/manifest.csv", *sorted((w / "run/synthetic").glob("*/manifest.csv"))]:
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    root = manifest.parent
    resolves = {column: all((root / value).resolve().exists() for value in table[column])
                for column in ("source", "checkpoint")}
    resolves["parents"] = all((root / p).resolve().is_file() for cell in table["parents"] for p in json.loads(cell))
    inside = all(str((root / v).resolve()).startswith(str(w)) for v in table["checkpoint"])
    print(f"{manifest.relative_to(w)}: source e.g. {table['source'][0]!r}; every column resolves from the "
          f"manifest's folder: {resolves}; checkpoints inside the run folder: {inside}")
EOF

# ---------------------------------------------------------------------------------------------------------- 6
section "6. unsafe checkpoint loading: what a checkpoint folder holds, and a booby-trapped pickle"
ls ckpt
$PY - "$W" <<'EOF'
import sys, zipfile
from pathlib import Path
from safetensors import safe_open
w = Path(sys.argv[1])
files = [p for p in w.rglob("*") if p.suffix in (".pt", ".safetensors", ".pth", ".pkl")]
pickles = [p for p in files if zipfile.is_zipfile(p)]
for p in files:
    with safe_open(str(p), "pt"):
        pass
print(f"{len(files)} weight files under the work folder (checkpoints, classifier model.pt files): "
      f"all open as safetensors, {len(pickles)} are torch pickles")
EOF
$PY - <<EOF
import os, torch
class Trap:
    def __reduce__(self):
        return (os.system, ("touch $W/PWNED",))
torch.save({"state_dict": Trap()}, "trap.pt")
os.makedirs("trap-ckpt", exist_ok=True)
torch.save({"model": Trap()}, "trap-ckpt/model.pt")
EOF
split_csv="$W/folds.csv"
$PY -m sonosynth -q split phantom --out "$split_csv" --folds 3 --minority pneumonia > /dev/null 2>&1
ss classify phantom --folds "$split_csv" --out trap-run --preset smoke --pretrained trap.pt --no-progress
ss generate singan trap-ckpt --out trap-samples -n 1
echo "PWNED file created by loading: $([ -e PWNED ] && echo yes || echo no)"

# ---------------------------------------------------------------------------------------------------------- 7
section "7. a truncated video"
$PY - <<EOF
import sys
sys.path.insert(0, "$TREE")
from pathlib import Path
from tests.media import truncate, write_clip
Path("clips/covid").mkdir(parents=True, exist_ok=True)
truncate(write_clip(Path("clips/covid/p1_clip.mp4"), seconds=4, fps=3, options={"movflags": "faststart"}))
write_clip(Path("clips/covid/p2_clip.mp4"), seconds=4, fps=3)
EOF
ss ingest folder clips --out clips-out --size 32
cat clips-out/skipped.csv

# ---------------------------------------------------------------------------------------------------------- 8
section "8. reader-study server: body size, echo, identity"
ss -q reader-study create --real phantom --synthetic elsewhere/samples --out readers --per-generator 2 --real-count 2
$PY -m sonosynth reader-study serve readers --port 8765 > serve.log 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8765/api/study && break; sleep 0.2; done
head -c 50000000 /dev/zero | tr '\0' x | sed 's/^/{"name": "/; s/$/"}/' > big.json
echo "POST of $(stat -c %s big.json) bytes:"
curl -s -o big.out -w "  HTTP %{http_code}, %{size_download} bytes back\n" -H 'content-type: application/json' \
     --data-binary @big.json http://127.0.0.1:8765/api/readers
marker=$(printf 'ECHO-ME-%.0s' $(seq 20))
echo "POST of an invalid body holding a marker:"
curl -s -w "\n  HTTP %{http_code}\n" -H 'content-type: application/json' -d "{\"nom\": \"$marker\"}" \
     http://127.0.0.1:8765/api/readers | sed 's/^/  /'
echo "Ann registers, then someone else types 'Ann':"
curl -s -H 'content-type: application/json' -d '{"name": "Ann"}' http://127.0.0.1:8765/api/readers \
  | $PY -c 'import json,sys; d=json.load(sys.stdin); print("  Ann gets her own secret token:", len(d["reader"]), "characters")'
curl -s -w "\n  HTTP %{http_code}\n" -H 'content-type: application/json' -d '{"name": "Ann"}' \
     http://127.0.0.1:8765/api/readers | sed 's/^/  /'
kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null
ss reader-study link readers Ann | sed -E 's/#reader=[A-Za-z0-9_-]+/#reader=<secret>/'

# ---------------------------------------------------------------------------------------------------------- 9
section "9. an ingest killed with kill -9, and a classify that fails"
$PY - <<'EOF'
import numpy as np
from pathlib import Path
from PIL import Image
for i in range(400):
    folder = Path("many") / ("a" if i % 2 else "b")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(i).integers(0, 255, (256, 256), dtype=np.uint8)).save(folder / f"{i}.png")
EOF
$PY -m sonosynth -q ingest folder many --out many-out --size 128 > /dev/null 2>&1 &
INGEST=$!
for _ in $(seq 100); do ls -d .many-out.*.partial > /dev/null 2>&1 && break; sleep 0.1; done
sleep 1; kill -9 "$INGEST"; wait "$INGEST" 2>/dev/null
echo "after kill -9: $(ls -a | grep -c 'many-out.*partial') partial folder(s): $(ls -a | grep partial | tr '\n' ' ')"
ss ingest folder many --out many-out --size 128 -q
echo "after the rerun: $(ls -a | grep -c 'many-out.*partial') partial folder(s); many-out holds $(pngs many-out/frames) frames"
ss classify phantom --folds "$split_csv" --out failed-classify --preset smoke --pretrained missing.pt --no-progress
echo "failed-classify exists afterwards: $([ -e failed-classify ] && echo yes || echo no)"

# ---------------------------------------------------------------------------------------------------------- 10
section "10a. folds.csv whose patient labels disagree with the manifest, or with extra patients"
awk -F, 'BEGIN{OFS=","} NR==2{ $2 = ($2=="covid" ? "healthy" : "covid") } {print}' "$split_csv" > bad-label.csv
cp "$split_csv" extra.csv && tail -1 "$split_csv" | sed 's/^[^,]*/stranger/' >> extra.csv
head -2 "$split_csv"
ss classify phantom --folds bad-label.csv --out c1 --preset smoke --no-progress
ss classify phantom --folds extra.csv --out c2 --preset smoke --no-progress
section "10b. --set generators.0.samples_per_model=-1"
ss run study.yaml --out run --set generators.0.samples_per_model=-1
ss run study.yaml --out run --set generators.5.samples_per_model=2
section "10c. a symlink loop in a class folder"
mkdir -p linked/covid && cp "$img" linked/covid/ && ln -s ../covid linked/covid/loop && ln -s self.png linked/covid/self.png
ss ingest folder linked --out linked-out --size 32
cat linked-out/skipped.csv
section "10d. train resumes and says so"
ss train sinddm "$img" --out sinddm-ckpt --preset smoke 2>&1 | grep -iE "resum|exit"
ss train sinddm "$img" --out sinddm-ckpt --preset smoke --set train_steps=40 2>&1 | grep -iE "resum|exit"
section "10e. quality.csv of a run, and of a copy of the run"
cp -r run run-copy
ss -q run study.yaml --out run-copy 2>&1 | tail -1
echo "absolute paths of the work folder in run/quality.csv: $(grep -c "$W" run/quality.csv)"
cut -d, -f1-6 run/quality.csv | head -3
diff <(cut -d, -f1-40 run/quality.csv) <(cut -d, -f1-40 run-copy/quality.csv) > /dev/null \
  && echo "run/quality.csv and run-copy/quality.csv are identical" || diff run/quality.csv run-copy/quality.csv | head -5

echo; echo "work folder: $W"
