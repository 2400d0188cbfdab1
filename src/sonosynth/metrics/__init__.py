"""Metrics: classification scores on real validation images (`classification`) and image quality (`quality`)."""
