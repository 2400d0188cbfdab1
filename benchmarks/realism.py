"""Realism of each generator at the presets a study config uses, and of the guided generator, on real POCUS images.

For every generator of the study config (default `configs/lung-cpu.yaml`: SinGAN, SinDDM, FewDDM at
the settings that study trains them with), on the same real images:

- training images: the first `--images` pneumonia still images (by file name) for per-image models,
  the first `--fold-images` for a per-fold model (FewDDM learns from several images at once), at most the
  generator's `max_images_per_model`. With `--train-on frames` they are video frames instead: the
  middle frame of each pneumonia clip, clips in file-name order. Stills and frames differ in texture
  (photos against compressed video), and the reader's real side is mostly frames, so a generator that
  reproduces its still well is still told apart by that difference: with stills the reader measures
  "frame-likeness" as much as realism. Train on frames to compare like with like;
- `samples_per_model` samples of each model (the config's number);
- the metrics of the study's quality unit (`evaluate_quality`; SIFID in the fixed random-CNN space, which
  is blind to noise, so read SIFID beside the reader and the grids):
  automatic-reader ROC AUC with its cluster-bootstrap CI and fake-detection rate (real side: every
  pneumonia frame of the patients no generator saw, grouped by patient), SIFID and SSIM to each
  sample's source, plus patch SWD of each model's samples against its training images;
- wall time of fitting and sampling, and one grid PNG per generator and class (training images on
  the first row, samples below), written to `--out`.

The class-conditional guided diffusion generator (name `guided`; `--guided-preset`, default `cpu`) is
benchmarked on all three classes at once, because it is one model conditioned on the class:

- data: every POCUS frame of covid, pneumonia and healthy at the preset's image size (64 px), one
  frame per second of each clip; split by PATIENT, per class a seeded `--train-fraction` (0.65) of the
  patients is the training side the generator fits, the rest the held-out side it never sees;
- per class: the automatic reader (the one `evaluate_quality` uses) of the class's samples against
  the held-out patients' frames of that class, grouped by patient (ROC AUC, cluster-bootstrap CI,
  fake-detection rate); FID and KID in the domain feature space (ONE `small_cnn` trained with
  `train_domain_network` on every real frame, cached in `--out`, its sha1 in every row), so arms of
  different runs compare; the neighbour-difference energy of samples and of the held-out real frames
  (issue #15's defect signature: 104 for samples against 8.1 for real),

      E = ( mean |x[i, j+1] - x[i, j]| + mean |x[i+1, j] - x[i, j]| ) / 2   on the 0..255 scale;

- per arm (repeated on each class row): CAS = BA(small_cnn trained on the synthetic images only) /
  BA(the same small_cnn, same classifier preset, trained on the real training side), BA = balanced
  accuracy on the held-out real patients (`sonosynth.metrics.quality.synthetic_utility`);
- train and sample wall time, the trained step count, and a grid PNG per class (`grid-guided-ARM-CLASS.png`:
  real held-out frames on the first row, 16 samples below).

Levers are compared as arms: each invocation appends its rows, labelled `--arm NAME`, to
`--out/realism-guided.csv`, so a "before" and an "after" run give two row groups of one table:

    python benchmarks/realism.py --out /tmp/r --generators guided --guided-budget 20m --arm fp32-ddim50
    python benchmarks/realism.py --out /tmp/r --generators guided --guided-budget 20m --arm bf16-dpm20 \
        --guided-set precision=bf16 channels_last=true sample.sampler=dpm++ sample.steps=20

A sampling-only arm scores an earlier arm's trained model with other sample settings, without training
again (`--samples-from ARM`; pass the same --guided-preset/--guided-set as that arm, plus the sample.* ones):

    python benchmarks/realism.py --out /tmp/r --generators guided --guided-budget 20m --arm fp32-scale1 \
        --samples-from fp32-ddim50 --guided-set sample.scale=1.0

The data and everything derived from it stay in `--out`, which must be outside the repository.
When the POCUS folder is absent the benchmark says so and exits (status 0): nothing to measure.

Run (under the team's CPU lock; `--quick` trains 1/30 of the steps on one image, about 2 minutes, and
the guided generator for 40 steps on 3 frames per clip, a few minutes; `--generators` picks a subset):
    flock /tmp/sonosynth-cpu.lock python benchmarks/realism.py --out /tmp/realism [--quick] [--generators guided]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "pocus"
if not DEFAULT_DATA.is_dir():  # a worktree sits one level deeper than the main checkout
    DEFAULT_DATA = Path("/work/shared/data/pocus")
LABEL = "pneumonia"
# --quick: the same presets with about 1/30 of the training, so the whole pipeline runs in minutes.
QUICK_OVERRIDES = {
    "singan": {"iterations": 4, "lr_drop_at": 3, "checkpoint_every": 2},
    "sinddm": {"train_steps": 40, "lr_milestones": [30], "ema_start": 20, "checkpoint_every": 20},
}
GRID_SAMPLES = 16
GUIDED = "guided"

log = logging.getLogger("realism")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder, outside the repository")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "lung-cpu.yaml")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the POCUS folder")
    parser.add_argument("--images", type=int, default=None,
                        help="training images of per-image generators (default: the config's max_models, else 2)")
    parser.add_argument("--fold-images", type=int, default=6, help="training images of a per-fold generator")
    parser.add_argument("--train-on", choices=["stills", "frames"], default="stills",
                        help="the generators' training images: pneumonia stills, or the middle frame of each "
                             "pneumonia clip (the reader's real side is mostly frames; see above)")
    parser.add_argument("--generators", nargs="*", default=None,
                        help="only these: generator names of the config and/or 'guided' (default: all of them)")
    parser.add_argument("--quick", action="store_true",
                        help="1/30 of the training, 8 samples, one image; guided: 40 steps, DDIM-10, 16 samples")
    parser.add_argument("--device", default="cpu")
    guided = parser.add_argument_group("guided diffusion (generator name 'guided')")
    guided.add_argument("--guided-preset", default="cpu", help="preset of sonosynth/presets/guided.yaml or a YAML path")
    guided.add_argument("--guided-budget", default=None, help="train for this wall time (e.g. 20m) instead of steps")
    guided.add_argument("--guided-set", nargs="*", default=None, metavar="KEY=VALUE",
                        help="config overrides, dotted keys (precision=bf16 channels_last=true sample.sampler=dpm++ "
                             "sample.steps=20)")
    guided.add_argument("--guided-samples", type=int, default=None, help="samples per class (default 100; quick 16)")
    guided.add_argument("--arm", default="baseline", help="label of this run's rows in realism-guided.csv")
    guided.add_argument("--train-fraction", type=float, default=0.65, help="share of each class's patients trained on")
    guided.add_argument("--split-seed", type=int, default=0, help="seed of the patient split")
    guided.add_argument("--samples-from", default=None, metavar="ARM",
                        help="sample and score arm ARM's trained model (read in place, never retrained) "
                             "with this run's sample settings (e.g. --guided-set sample.scale=1.0)")
    return parser.parse_args()


def _real_data(data: Path, out: Path, options):
    """The pneumonia frames and stills, ingested with the study's own options (a PocusIngestOptions or a dict)."""
    from sonosynth.data.pocus import PocusIngestOptions, ingest_pocus

    values = options.model_dump() if hasattr(options, "model_dump") else dict(options or {})
    manifest, _ = ingest_pocus(data, out / "data", PocusIngestOptions(**{**values, "classes": [LABEL]}),
                               progress=False)
    return manifest


def _one_per_row(manifest):
    """Single-row manifests, ordered by source file name: the fixed training images."""
    return [manifest.where(manifest.table.index == i) for i in manifest.table.sort_values("source").index]


def _stills(manifest):
    """One per pneumonia still image, ordered by file name."""
    from sonosynth.experiment.plan import is_still

    return _one_per_row(manifest.where(is_still(manifest)))


def _middle_frames(manifest):
    """One per pneumonia clip, its middle sampled frame (the study's one_per_source), clips by file name."""
    from sonosynth.experiment.plan import is_still, middle_frame_per_source

    return _one_per_row(middle_frame_per_source(manifest.where(~is_still(manifest))))


def _config(generator, quick: bool):
    from sonosynth.config import load_config
    from sonosynth.generators.base import create_generator

    implementation = create_generator(generator.kind)
    overrides = {**generator.overrides, **(QUICK_OVERRIDES.get(generator.kind, {}) if quick else {})}
    return implementation, load_config(implementation.config_type, implementation.presets, generator.preset, overrides)


def _run_generator(generator, groups, samples: int, folder: Path, device: str, quick: bool):
    """Fit one model per group and sample from each; returns the joined SyntheticSet and the seconds spent."""
    from sonosynth.data.manifest import concat

    implementation, config = _config(generator, quick)
    sets, fit_seconds, sample_seconds = [], 0.0, 0.0
    for index, group in enumerate(groups):
        model = folder / f"model-{index}"
        started = time.perf_counter()
        checkpoint = implementation.fit(group, model / "checkpoint", config, device=device, resume=False,
                                        progress=False)
        fit_seconds += time.perf_counter() - started
        started = time.perf_counter()
        sets.append(implementation.sample(checkpoint, samples, model / "samples", label=LABEL, seed=0, device=device,
                                          progress=False, **generator.sample_settings))
        sample_seconds += time.perf_counter() - started
    return concat(sets, folder), fit_seconds, sample_seconds


def _patch_swd_per_model(synthetic, store) -> float:
    from sonosynth.metrics.quality.swd import patch_swd

    table, paths, parents = synthetic.table, synthetic.absolute_paths(), synthetic.parent_paths()
    values = []
    for index in table.groupby(table["checkpoint"].astype(str)).indices.values():
        sources = list(dict.fromkeys(p for i in index for p in parents[i]))
        values.append(patch_swd(store.get_many([paths[i] for i in index]), store.get_many(sources)))
    return float(np.nanmean(values))


def _grid(path: Path, name: str, training, synthetic, store) -> None:
    from sonosynth.data.grid import image_grid

    def as_uint8(images):
        return [np.clip(np.rint(i * 255), 0, 255).astype(np.uint8) for i in images]

    real = as_uint8(store.get_many(training.absolute_paths()[:8]))
    fakes = as_uint8(store.get_many(synthetic.absolute_paths()[:GRID_SAMPLES]))
    rows = [("real (training)", real)] + [(f"{name} {i + 1}-{i + 8}", fakes[i:i + 8]) for i in range(0, len(fakes), 8)]
    image_grid(rows, tile=128).save(path)


def _guided(args: argparse.Namespace, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from realism_guided import run_guided

    table = run_guided(args, out)
    columns = ["arm", "label", "train_steps", "samples", "held_out_frames", "reader_auc", "reader_auc_lo",
               "reader_auc_hi", "reader_fake_detection", "fid", "kid", "energy_samples", "energy_real", "energy_reconstruction",
               "ba_synthetic", "ba_real", "cas", "fit_s", "sample_s"]
    print(f"\nguided diffusion on POCUS, all classes ({'quick' if args.quick else 'full'}; domain features "
          f"{table['domain_sha1'].iloc[0]}; appended to {out / 'realism-guided.csv'})")
    print(table.reindex(columns=columns).to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _arguments()
    out = args.out.resolve()
    if out.is_relative_to(REPO):
        raise SystemExit(f"--out {out} is inside the repository; real data and its derivatives must stay outside it.")
    if not (args.data / "dataset_metadata.csv").is_file():
        print(f"skipped: the POCUS data is not at {args.data} (pass --data); nothing to measure.")
        return

    from sonosynth.data.manifest import concat
    from sonosynth.experiment.plan import resolve_quality
    from sonosynth.experiment.spec import load_spec
    from sonosynth.metrics.quality import evaluate_quality, load_quality_config
    from sonosynth.metrics.quality.features import RANDOM_CNN, create_extractor
    from sonosynth.metrics.quality.images import ImageStore

    spec = load_spec(args.config)
    generators = [g for g in spec.generators if args.generators is None or g.name in args.generators]
    run_guided = args.generators is None or GUIDED in args.generators
    if run_guided:
        _guided(args, out)
    if not generators and run_guided:
        return
    if not generators or spec.data.pocus is None:
        raise SystemExit(f"{args.config}: no POCUS data section or no generator named {args.generators}.")
    manifest = _real_data(args.data, out, spec.data.pocus.options)
    candidates = _stills(manifest) if args.train_on == "stills" else _middle_frames(manifest)
    per_image = 1 if args.quick else (args.images or max((g.max_models or 0) for g in generators) or 2)
    fold_images = 2 if args.quick else args.fold_images
    if len(candidates) < max(per_image, fold_images) + 1:
        raise SystemExit(f"only {len(candidates)} pneumonia {args.train_on} under {args.data}; lower --images/--fold-images.")
    # The study's own quality settings (its preset and overrides, such as a full-size reader).
    quality = load_quality_config("smoke") if args.quick else (resolve_quality(spec) or load_quality_config("cpu"))
    extractor = create_extractor(RANDOM_CNN, device=args.device)
    store = ImageStore()
    rows = []
    for generator in generators:
        if generator.models == "per_image":
            groups = candidates[:per_image]
        else:
            count = min(fold_images, generator.max_images_per_model or fold_images)
            groups = [concat(candidates[:count], out / "data")]
        training = concat(groups, out / "data")
        folder = out / "runs" / generator.name
        shutil.rmtree(folder, ignore_errors=True)
        samples = 8 if args.quick else generator.samples_per_model
        print(f"{generator.name}: {len(groups)} model(s) on {len(training)} image(s), {samples} samples each",
              flush=True)
        synthetic, fit_s, sample_s = _run_generator(generator, groups, samples, folder, args.device, args.quick)
        report = evaluate_quality(synthetic, training, extractor, quality, reader_real=manifest)
        row = report.table.iloc[0]
        rows.append({
            "generator": generator.name, "preset": generator.preset, "train_on": args.train_on,
            "models": len(groups), "samples": len(synthetic), "reader_auc": row["reader_auc"],
            "reader_auc_lo": row["reader_auc_lo"], "reader_auc_hi": row["reader_auc_hi"], "reader_fake_detection": row["reader_fake_detection"],
            "reader_real_images": row["reader_real_images"], "sifid": row["sifid"], "ssim": row["ssim"],
            "patch_swd": _patch_swd_per_model(synthetic, store), "fit_s": fit_s, "sample_s": sample_s,
        })
        _grid(out / f"grid-{generator.name}-{LABEL}.png", generator.name, training, synthetic, store)
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "realism.csv", index=False)
    print(f"\nrealism on POCUS {LABEL} ({'quick' if args.quick else 'full'}; features {extractor.description}); "
          f"reader real side: {int(table['reader_real_images'].iloc[0])} images (frames and stills) of unseen patients; "
          f"generators trained on {args.train_on}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"grids and tables in {out}")


if __name__ == "__main__":
    sys.exit(main())
