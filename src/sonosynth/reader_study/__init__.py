"""Blinded reader study: an expert labels shuffled real and synthetic images as real or synthetic.

`create_study` draws the images and hides their origin behind random IDs; `create_app` serves the
reading page; `write_results` / `reader_study_section` turn the answers into Table-4-style tables.
The web parts (FastAPI, uvicorn) are imported only by `sonosynth.reader_study.app`.
"""

from sonosynth.reader_study.create import (
    StudyOptions,
    StudySummary,
    SyntheticInput,
    create_study,
    draw_images,
)
from sonosynth.reader_study.report import ResultFiles, reader_study_section, write_results
from sonosynth.reader_study.results import (
    StudyResults,
    accuracy_table,
    agreement_table,
    detection_table,
    fleiss_kappa,
    study_results,
    table4,
    wilson_interval,
)
from sonosynth.reader_study.store import StudyStore

__all__ = [
    "ResultFiles", "StudyOptions", "StudyResults", "StudyStore", "StudySummary", "SyntheticInput", "accuracy_table",
    "agreement_table", "create_study", "detection_table", "draw_images", "fleiss_kappa", "reader_study_section",
    "study_results", "table4", "wilson_interval", "write_results",
]
