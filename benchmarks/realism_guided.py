"""The guided-diffusion arm of benchmarks/realism.py (see its docstring for what is measured and why)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

CLASSES = ["covid", "healthy", "pneumonia"]
GRID_REAL, GRID_SAMPLES = 8, 16
# --quick: a few dozen denoiser steps and a short sampler, so the whole guided path runs in minutes.
QUICK = {"train": {"steps": 40, "checkpoint_every": 40, "warmup_steps": 5, "log_every": 10},
         "sample": {"steps": 10}}


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def guided_config(preset: str, budget: str | None, overrides: dict, quick: bool):
    from sonosynth.config import load_config
    from sonosynth.generators.guided.config import GuidedConfig

    values = _deep_merge(QUICK if quick else {}, overrides)
    if budget is not None:
        values["budget"] = budget
    values.setdefault("checkpoint_interval", "1000h")
    return load_config(GuidedConfig, "guided", preset, values)


def real_frames(data: Path, out: Path, size: int, quick: bool):
    """Every POCUS frame of the three classes at `size` px, 1 frame per second of each clip."""
    from sonosynth.data.pocus import PocusIngestOptions, ingest_pocus

    options = PocusIngestOptions(size=size, fps=1.0, classes=CLASSES, max_frames=3 if quick else None)
    manifest, _ = ingest_pocus(data, out / f"data-guided-{size}{'-quick' if quick else ''}", options, progress=False)
    return manifest


def patient_split(manifest, fraction: float, seed: int):
    """(training side, held-out side): per class, a seeded `fraction` of the patients trains the generator."""
    table = manifest.table
    rng = np.random.default_rng(seed)
    train_patients: set[str] = set()
    for label in sorted(set(table["label"].astype(str))):
        patients = sorted(set(table.loc[table["label"].astype(str) == label, "patient_id"].astype(str)))
        rng.shuffle(patients)
        keep = min(len(patients) - 1, max(1, round(fraction * len(patients))))
        train_patients |= set(patients[:keep])
    is_train = table["patient_id"].astype(str).isin(train_patients)
    return manifest.where(is_train), manifest.where(~is_train)


def domain_network(real, out: Path, quick: bool, device: str):
    """The one domain feature network of this --out (trained once on every real frame, then reused)."""
    from sonosynth.classify.domain import DOMAIN_CHECKPOINT, DOMAIN_RECORD, train_domain_network
    from sonosynth.classify.training import load_train_config

    folder = out / ("domain-quick" if quick else "domain")
    record = folder / DOMAIN_RECORD
    if not record.is_file():
        config = load_train_config("smoke" if quick else "cpu", {"image_size": 64})
        train_domain_network(real, folder, config, device=device, progress=False)
    return folder / DOMAIN_CHECKPOINT, json.loads(record.read_text())["sha1"]


def classifier_balanced_accuracy(train, test, classes: list[str], quick: bool, device: str, folder: Path) -> float:
    """small_cnn (classifier preset smoke/cpu, 64 px, no early stopping: every epoch, the last kept) on `train`."""
    from sonosynth.classify import create_classifier
    from sonosynth.classify.data import ManifestDataset
    from sonosynth.classify.training import (
        load_train_config,
        predict_probabilities,
        seed_everything,
        train_classifier,
    )
    from sonosynth.device import resolve_device
    from sonosynth.metrics.quality.synthetic_utility import balanced_accuracy

    config = load_train_config("smoke" if quick else "cpu", {"image_size": 64, "stop_fraction": 0.0})
    torch_device = resolve_device(device)
    seed_everything(config.seed)
    model = create_classifier("small_cnn", len(classes), in_channels=1, pretrained="none", image_size=64)
    fit = ManifestDataset(train, classes, 64, 1)
    held_out = ManifestDataset(test, classes, 64, 1)
    folder.mkdir(parents=True, exist_ok=True)
    train_classifier(model, fit, None, config, torch_device, losses_csv=folder / "losses.csv", progress=False)
    predictions = predict_probabilities(model, held_out, torch_device).argmax(axis=1)
    return balanced_accuracy(held_out.targets, predictions)


def _uint8(images) -> np.ndarray:
    return np.stack([np.clip(np.rint(np.asarray(i) * 255), 0, 255).astype(np.uint8) for i in images])


def run_guided(args, out: Path) -> pd.DataFrame:
    """Train the guided generator on the training patients, score it per class against held-out patients."""
    from sonosynth.classify.features import classifier_features
    from sonosynth.config import parse_overrides
    from sonosynth.data.grid import image_grid, save_image
    from sonosynth.data.manifest import concat
    from sonosynth.generators.base import create_generator
    from sonosynth.metrics.quality import load_quality_config
    from sonosynth.metrics.quality.features import pooled_features
    from sonosynth.metrics.quality.frechet import feature_frechet_distance, kernel_inception_distance
    from sonosynth.metrics.quality.images import ImageStore
    from sonosynth.metrics.quality.reader import automatic_reader
    from sonosynth.metrics.quality.synthetic_utility import cas_ratio, neighbour_difference

    config = guided_config(args.guided_preset, args.guided_budget, parse_overrides(args.guided_set), args.quick)
    arm = args.arm
    manifest = real_frames(args.data, out, config.image_size, args.quick)
    training, held_out = patient_split(manifest, args.train_fraction, args.split_seed)
    print(f"guided [{arm}]: {len(training)} training frames ({training.table['patient_id'].nunique()} patients), "
          f"{len(held_out)} held-out frames ({held_out.table['patient_id'].nunique()} patients)", flush=True)
    checkpoint, domain_sha1 = domain_network(manifest, out, args.quick, args.device)
    extractor = classifier_features(checkpoint, device=args.device)
    quality = load_quality_config("smoke" if args.quick else "cpu")
    store = ImageStore()

    folder = out / "runs" / f"guided-{arm}"
    generator = create_generator("guided")
    started = time.perf_counter()
    if args.samples_from:  # a sampling-only arm: the other arm's trained model, read in place
        fitted = out / "runs" / f"guided-{args.samples_from}" / "checkpoint"
        if not (fitted / "generator.json").is_file():
            raise SystemExit(f"--samples-from {args.samples_from}: no trained model in {fitted}; run that arm first.")
    else:
        fitted = generator.fit(training, folder / "checkpoint", config, device=args.device, resume=False,
                               progress=False)
    fit_s = time.perf_counter() - started
    samples = args.guided_samples or (16 if args.quick else 100)
    sets, sample_s = {}, 0.0
    for label in CLASSES:
        started = time.perf_counter()
        # the arm's sample settings, explicitly: a --samples-from arm differs from its model's stored defaults
        sets[label] = generator.sample(fitted, samples, folder / f"samples-{label}", label=label, seed=0,
                                       device=args.device, progress=False, **config.sample.model_dump())
        sample_s += time.perf_counter() - started
    synthetic = concat(list(sets.values()), folder)

    ba_real = classifier_balanced_accuracy(training, held_out, CLASSES, args.quick, args.device, folder / "cas-real")
    ba_synthetic = classifier_balanced_accuracy(synthetic, held_out, CLASSES, args.quick, args.device,
                                                folder / "cas-synthetic")
    cas = cas_ratio(ba_synthetic, ba_real)

    reconstruct = _reconstruction(fitted, config, args.device) if config.latent.enabled else None
    rows = []
    held_labels = held_out.table["label"].astype(str).to_numpy()
    held_paths, held_patients = held_out.absolute_paths(), held_out.table["patient_id"].astype(str).to_numpy()
    for label in CLASSES:
        real_index = np.flatnonzero(held_labels == label)
        real_images = store.get_many([held_paths[i] for i in real_index])
        fake_images = store.get_many(sets[label].absolute_paths())
        reader = automatic_reader(real_images, held_patients[real_index], fake_images,
                                  ["guided"] * len(fake_images), quality.reader)
        real_features = pooled_features(extractor, real_images, quality.batch_size)
        fake_features = pooled_features(extractor, fake_images, quality.batch_size)
        kid, kid_std = kernel_inception_distance(real_features, fake_features, quality.kid_subsets,
                                                 quality.kid_subset_size, quality.seed)
        rows.append({
            "arm": arm, "label": label, "preset": args.guided_preset, "budget": config.budget or "",
            "overrides": " ".join(args.guided_set or []), "train_steps": _trained_steps(fitted),
            "samples": len(fake_images), "held_out_frames": len(real_images),
            "held_out_patients": len(set(held_patients[real_index])),
            "reader_auc": reader.auc, "reader_auc_lo": reader.auc_lo, "reader_auc_hi": reader.auc_hi,
            "reader_fake_detection": reader.fake_detection,
            "fid": feature_frechet_distance(real_features, fake_features), "kid": kid, "kid_std": kid_std,
            "energy_samples": neighbour_difference(_uint8(fake_images)),
            "energy_real": neighbour_difference(_uint8(real_images)),
            "ba_synthetic": ba_synthetic, "ba_real": ba_real, "cas": cas,
            "fit_s": fit_s, "sample_s": sample_s, "domain_sha1": domain_sha1[:12], "quick": args.quick,
        })
        fakes = list(_uint8(fake_images[:GRID_SAMPLES]))
        grid_rows = [(f"real {label}", list(_uint8(real_images[:GRID_REAL])))]
        if reconstruct is not None:  # what the decoder can draw at best: the ceiling on latent samples' sharpness
            recon = _uint8(reconstruct(real_images[:GRID_REAL]))
            rows[-1]["energy_reconstruction"] = neighbour_difference(_uint8(reconstruct(real_images)))
            grid_rows.append(("autoencoder D(E(real))", list(recon)))
        grid_rows += [(f"guided {i + 1}-{i + 8}", fakes[i:i + 8]) for i in range(0, len(fakes), 8)]
        save_image(image_grid(grid_rows, tile=128), out / f"grid-guided-{arm}-{label}.png")
    table = pd.DataFrame(rows)
    csv = out / "realism-guided.csv"
    # arms differ in columns (latent arms add energy_reconstruction): merge, never append under a stale header
    merged = pd.concat([pd.read_csv(csv), table], ignore_index=True) if csv.is_file() else table
    merged.to_csv(csv, index=False)
    return table


def _reconstruction(checkpoint: Path, config, device: str):
    """images in [0, 1] -> D(E(x)) in [0, 1] with the fit's saved autoencoder (posterior mean, no sampling)."""
    import torch

    from sonosynth.checkpoint import load_weights
    from sonosynth.device import resolve_device
    from sonosynth.generators.guided.latent import AUTOENCODER_NAME, build_autoencoder

    torch_device = resolve_device(device)
    autoencoder = build_autoencoder(config)
    autoencoder.load_state_dict(load_weights(checkpoint / AUTOENCODER_NAME)[0])
    autoencoder = autoencoder.to(torch_device).eval()

    @torch.no_grad()
    def reconstruct(images) -> list[np.ndarray]:
        out = []
        for image in images:
            x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None].to(torch_device) * 2 - 1
            mu = autoencoder.encode(x)[0]
            out.append(((autoencoder.decode(mu).clamp(-1, 1) + 1) / 2)[0, 0].cpu().numpy())
        return out

    return reconstruct


def _trained_steps(checkpoint: Path) -> int | None:
    from sonosynth.generators.base import read_record

    record = read_record(checkpoint)
    return None if record is None else record.step
