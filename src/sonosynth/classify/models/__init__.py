"""One module per classifier family; each registers its builders with `sonosynth.classify.zoo`."""
