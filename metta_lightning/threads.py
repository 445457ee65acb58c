"""How many threads torch uses for its CPU work (acting, the update on a CPU, evaluation).

One place decides, for `fit` and `evaluate` alike: `$METTA_TORCH_THREADS` if set; else, when
`OMP_NUM_THREADS` is set, torch already follows it and nothing is changed; else the CPU cores this
process may run on (its affinity mask, not the machine's count: a container or `taskset` limits it),
divided among the processes of this node (`LOCAL_WORLD_SIZE`, set by torchrun and Lightning's DDP
launcher), at least one each. Torch's own default counts every physical core of the machine, which
oversubscribes a container or a node running several ranks.
"""

from __future__ import annotations

import os

__all__ = ["configure_torch_threads", "default_torch_threads"]


def default_torch_threads() -> int | None:
    """The thread count described in the module doc; None: leave torch's (OMP_NUM_THREADS decides)."""
    explicit = os.environ.get("METTA_TORCH_THREADS")
    if explicit:
        try:
            threads = int(explicit)
        except ValueError:
            raise ValueError(f"METTA_TORCH_THREADS={explicit!r}: expected a positive integer") from None
        if threads < 1:
            raise ValueError(f"METTA_TORCH_THREADS={explicit!r}: expected a positive integer")
        return threads
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // local_ranks)


def configure_torch_threads() -> int:
    """Apply `default_torch_threads()`; returns the count torch uses."""
    import torch

    threads = default_torch_threads()
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()
