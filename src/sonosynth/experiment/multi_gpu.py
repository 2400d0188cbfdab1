"""One generator fit on several GPUs, as one unit of a study: a torchrun-style launch from inside the unit.

A generator spec with `gpus: N` (N > 1) makes its fit unit ask for N GPUs of one node and run
`distributed_fit_unit`: it starts N processes on this machine through torch's elastic launcher (what
`torchrun --standalone --nproc-per-node N` runs), each with RANK, LOCAL_RANK, WORLD_SIZE and a free
rendezvous port set, and each calls the generator's `fit`. The generator joins the process group itself
(`generators/guided/distributed.py`: NCCL on GPUs, gloo on the CPU); rank 0 writes the checkpoint. Under
Ray the unit's task holds N GPUs, so CUDA_VISIBLE_DEVICES lists exactly those and local rank r uses the
r-th; run locally, the unit uses the machine's first N GPUs.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from pydantic import BaseModel

from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError


def _rank_fit(kind: str, config: BaseModel, images: Manifest, device: str, progress: bool, out: str,
              log_level: int, threads: int) -> tuple[int, int]:
    """One process of the launch: the generator's own fit; returns (rank, world size) as this process saw them."""
    import torch

    from sonosynth.generators.base import create_generator
    from sonosynth.logs import configure_worker

    configure_worker(log_level, None)
    torch.set_num_threads(threads)
    rank = int(os.environ["RANK"])
    create_generator(kind).fit(images, Path(out), config, device=device, resume=True, progress=progress and rank == 0)
    return rank, int(os.environ["WORLD_SIZE"])


def launch_fit(kind: str, config: BaseModel, images: Manifest, device: str, processes: int, out: Path,
               progress: bool = False) -> dict[int, tuple[int, int]]:
    """Fit `kind` on `images` into `out` with `processes` DDP processes on this machine; each rank's (rank, world)."""
    import torch
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from sonosynth.logs import console_level

    if device != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() < processes:
        raise SonosynthError(f"a fit on {processes} GPUs found {torch.cuda.device_count()} here; lower the "
                             "generator's `gpus` in the spec or run it on a node with more GPUs.")
    threads = max(1, torch.get_num_threads() // processes)
    launch = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, start_method="spawn",
                          monitor_interval=0.5)
    try:
        return elastic_launch(launch, _rank_fit)(kind, config, images, device, progress, str(out), console_level(),
                                                 threads)
    except Exception as exc:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        if isinstance(exc, ChildFailedError):
            raise SonosynthError(f"{out}: the {processes}-process fit of {kind} failed: {exc}; the last checkpoint "
                                 "is kept, re-run to resume.") from exc
        raise


def distributed_fit_unit(kind: str, config: BaseModel, images: Manifest, device: str, processes: int, progress: bool,
                         folder: Path) -> None:
    """The fit unit of a multi-GPU generator (plan.py): as `units.fit_unit`, trained by `processes` processes."""
    launch_fit(kind, config, images, device, processes, folder / "model", progress)
