"""sonosynth: synthetic ultrasound images from few examples, and a leakage-free study of whether they help."""

__version__ = "0.1.0"
