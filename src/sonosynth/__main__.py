"""`python -m sonosynth` runs the CLI (needed for `torchrun -m sonosynth ...`)."""

from sonosynth.cli import main

if __name__ == "__main__":
    main()
