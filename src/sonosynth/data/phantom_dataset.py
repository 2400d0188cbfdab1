"""The phantom dataset on disk: simulated frames written exactly like an ingest's output."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sonosynth.data.ingest import IngestOutput, IngestReport
from sonosynth.data.manifest import Manifest
from sonosynth.data.phantom import CLASSES, simulate_patient
from sonosynth.progress import track

PHANTOM_LICENSE = "CC0 (simulated by sonosynth)"


class PhantomOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patients: dict[str, int] = Field(
        {"covid": 12, "pneumonia": 4, "healthy": 12}, description="patients per class (pneumonia is the minority)"
    )
    frames: int = Field(10, ge=1, le=10_000, description="frames per patient, varying like a clip")
    size: int = Field(128, ge=32, le=1024, description="side of the square frames, in pixels")
    seed: int = Field(0, description="one seed fixes the whole dataset")

    @field_validator("patients")
    @classmethod
    def _known_classes(cls, patients: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(patients) - set(CLASSES))
        if unknown:
            raise ValueError(f"unknown phantom class(es) {unknown}; known: {list(CLASSES)}")
        if any(n < 0 for n in patients.values()) or not any(patients.values()):
            raise ValueError("patient counts must be >= 0 and not all zero")
        return patients


def parse_patient_counts(text: str) -> dict[str, int]:
    """'12,4,12' (in the order covid, pneumonia, healthy) or 'covid=12,pneumonia=4,healthy=12'."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if all("=" in p for p in parts):
        return {k.strip(): int(v) for k, v in (p.split("=", 1) for p in parts)}
    if len(parts) != len(CLASSES):
        raise ValueError(f"give {len(CLASSES)} counts in the order {','.join(CLASSES)}, e.g. 12,4,12")
    return dict(zip(CLASSES, (int(p) for p in parts), strict=True))


def make_phantom_dataset(out: str | os.PathLike, options: PhantomOptions | None = None, overwrite: bool = False,
                         progress: bool = True) -> tuple[Manifest, IngestReport]:
    options = options or PhantomOptions()
    out = Path(out)
    output = IngestOutput(out, "phantom", None, options, overwrite)
    if output.existing is not None:
        return output.result()
    jobs = [(label, index) for label in CLASSES for index in range(options.patients.get(label, 0))]
    with output.build() as writer:
        for label, index in track(jobs, "simulate phantom patients", enabled=progress):
            frames = simulate_patient(label, index, options.frames, options.size, options.seed)
            output.report.files_read += 1
            writer.write(
                ((f.frame_index, f.image) for f in frames),
                label=label, patient_id=frames[0].patient_id, source=f"phantom/{frames[0].patient_id}",
                license=PHANTOM_LICENSE,
            )
    return output.result()
