"""Process-wide settings that keep training fast on a CPU. Neither changed a measured accuracy.

Both were found by profiling the seed's recipe on the 2-core CPU (docs/benchmarks.md, "Where the
time went"), and are applied when ``lit_cifar.module`` is imported.
"""

from __future__ import annotations

import os

import torch


def configure_cpu_training() -> None:
    """Flush denormal floats to zero; skip Lightning's per-call GPU probe on a machine without a GPU.

    Denormals: Adam's running averages of weights that get no gradient for a while (inputs or
    units a ReLU keeps at zero) shrink by a constant factor every step until they are denormal
    floats, and stay there; the CPU computes on denormals many times slower. Three epochs into
    seed_bf16.yaml, 76% of fc1's first moments were denormal. Flushing them changes no value above
    1.2e-38. It must happen before torch starts its worker threads: each takes the setting of the
    thread that starts it, and a later call reaches none of them.

    GPU probe: Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so that asking whether CUDA is
    available never initialises CUDA, which would break forked workers), and then every
    ``torch.cuda.is_available()`` loads the NVIDIA management library anew. torch's Adam (and most
    of its optimizers) ask on every step. Where there is no GPU there is nothing to protect, and the check that replaces it
    is cached.
    """
    torch.set_flush_denormal(True)
    if not torch.cuda.is_available():
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
