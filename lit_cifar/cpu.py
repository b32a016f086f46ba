"""Process-wide settings that keep training fast on a CPU (none changed a measured accuracy), and what the
CPU has that decides which recipe settings are fastest on it.

Each was found by profiling the seed's recipe on the 2-core CPU (docs/benchmarks.md, "Where the
time went"), and all are applied when ``lit_cifar.module`` is imported.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

# glibc's mallopt parameters (malloc.h) and the values set: no block is mapped on its own (every one
# comes from the heap), and up to 1 GiB of freed heap is kept for reuse instead of being handed back.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREED_BYTES, MAPPED_BLOCKS = 1 << 30, 0


def configure_cpu_training() -> None:
    """Flush denormal floats to zero; keep freed memory for reuse; skip Lightning's per-call GPU
    probe on a machine without a GPU.

    Denormals: Adam's running averages of weights that get no gradient for a while (inputs or
    units a ReLU keeps at zero) shrink by a constant factor every step until they are denormal
    floats, and stay there; the CPU computes on denormals many times slower, and a few epochs into
    seed_bf16.yaml most of fc1's first moments were denormal (docs/benchmarks.md). Flushing them
    changes no value above 1.2e-38. It must happen before torch starts its worker threads: each takes the setting of the
    thread that starts it, and a later call reaches none of them.

    Freed memory: every step allocates and frees the same activation tensors. With glibc's default
    thresholds such blocks are often returned to the kernel when freed, and the next step's first
    touch of each page faults it back in: hundreds of page faults per step of SeedCNN at batch 32,
    and tens of thousands per step of the speedrun's batch 1024, whose activations of 100 MB and
    more glibc always maps on their own (docs/benchmarks.md). Taking every block from the heap and
    keeping freed heap removes the faults; the cost is that the process keeps its peak memory.

    GPU probe: Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (Lightning-AI/pytorch-lightning
    pull request 15110: asking whether CUDA is available then never initialises CUDA, which would
    break forked workers), and then every ``torch.cuda.is_available()`` loads the NVIDIA
    management library anew. torch's Adam (and most of its optimizers) ask on every step. Where
    there is no GPU there is nothing to protect, and the check that replaces it is cached.
    """
    torch.set_flush_denormal(True)
    keep_freed_memory()
    if not torch.cuda.is_available():
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


def keep_freed_memory() -> None:
    """Tell glibc's allocator to keep freed blocks for reuse; nothing where the C library has no mallopt."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform.startswith("linux") else None
    if mallopt is not None:
        mallopt(M_MMAP_MAX, MAPPED_BLOCKS)
        mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


def has_bf16_units() -> bool:
    """Whether this CPU computes in bf16 itself: AVX-512 BF16 dot products (Zen 4/5, Xeon since Cooper Lake)
    or AMX tiles (Xeon since Sapphire Rapids). Without them (an AVX2-only CPU such as AMD's Zen 3) oneDNN
    emulates bf16, and a bf16 step is many times slower than an fp32 one (docs/speed.md), so the recipes'
    bf16 runs in fp32 there (``lit_cifar.cli``) and Muon orthogonalises in fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in Linux's /proc/cpuinfo; empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            fields = {}
            for line in cpuinfo:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
            return fields
    except OSError:
        return {}


def cpu_model() -> str:
    """The CPU's model name, as Linux or else the platform names it."""
    return _model_name(_cpuinfo())


def _model_name(info: dict[str, str]) -> str:
    """The model name in ``_cpuinfo``'s fields, or else the platform's."""
    if info.get("model name"):
        return info["model name"]
    import platform

    return platform.processor() or "unknown CPU"


# (vendor, family, first model, last model) → the core's name: CPUs whose speed differs and that a virtual
# machine's model name ("AMD EPYC") does not tell apart; docs/benchmarks.md keeps a table per kind measured.
CORES = (
    ("AuthenticAMD", 25, 0x00, 0x0F, "Zen 3"),  # EPYC Milan
    ("AuthenticAMD", 25, 0x20, 0x5F, "Zen 3"),  # Ryzen 5000 and 6000
    ("AuthenticAMD", 25, 0x10, 0x1F, "Zen 4"),  # EPYC Genoa
    ("AuthenticAMD", 25, 0x60, 0x7F, "Zen 4"),  # Ryzen 7000
    ("AuthenticAMD", 25, 0xA0, 0xAF, "Zen 4"),  # EPYC Bergamo and Siena
    ("AuthenticAMD", 26, 0x00, 0xFF, "Zen 5"),
    ("GenuineIntel", 6, 0x8F, 0x8F, "Sapphire Rapids"),
    ("GenuineIntel", 6, 0xCF, 0xCF, "Emerald Rapids"),
    ("GenuineIntel", 6, 0xAD, 0xAE, "Granite Rapids"),
)


def core_name(vendor: str, family: int, model: int) -> str | None:
    """The core of a CPU by its vendor, family and model numbers (as /proc/cpuinfo gives them), if in CORES."""
    return next((name for v, f, first, last, name in CORES if (v, f) == (vendor, family) and first <= model <= last), None)


def cpu_kind() -> str:
    """The CPU's model name with its family and model numbers and, where known, its core: "AMD EPYC (family 25
    model 17: Zen 4)". Virtual machines often show one model name for CPUs of different speed."""
    info = _cpuinfo()
    name = _model_name(info)
    try:
        family, model = int(info["cpu family"]), int(info["model"])
    except (KeyError, ValueError):
        return name
    core = core_name(info.get("vendor_id", ""), family, model)
    return f"{name} (family {family} model {model}{f': {core}' if core else ''})"


def cpu_description() -> str:
    """The CPU's kind, cores torch uses, and the bf16 units that decide which settings are fastest on it."""
    bf16, amx = ("yes" if supported() else "no" for supported in (torch.cpu._is_avx512_bf16_supported, torch.cpu._is_amx_tile_supported))
    return f"{cpu_kind()}, {torch.get_num_threads()} threads, AVX-512 BF16: {bf16}, AMX: {amx}"
