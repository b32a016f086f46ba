"""Time the pieces of one SeedCNN training step in a plain loop, without Lightning: the floor under a recipe.

    python scripts/step_timing.py                 # on the GPU if there is one, else on the CPU
    python scripts/step_timing.py --steps 100
    python scripts/step_timing.py --steps 1 --warmup 1   # every row once: a check that it runs, not a timing

For batch 32 in fp32 in the seed's NCHW layout and in channels_last (seed.yaml), batch 32 in bf16
with channels_last (seed_bf16.yaml) and batch 128 likewise (fast.yaml), on random uint8 data held
on the device, it prints the milliseconds per step of: cutting and augmenting a batch (the seed's augmentation, normalised),
forward and backward, the fused Adam step, and all of them together. A recipe's step inside
Lightning costs this plus the trainer's own work; on a GPU these pieces are bound by kernel
launches, not arithmetic, so this is what an eager loop cannot go below (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lit_cifar.augment import normalize, seed_augment
from lit_cifar.cpu import configure_cpu_training, has_bf16_units
from lit_cifar.networks import SeedCNN

SETTINGS = ((32, False, False), (32, False, True), (32, True, True), (128, True, True))  # (batch, bf16, channels_last)
WARMUP_CALLS = 20  # untimed calls of a piece before it is timed: allocations, oneDNN's kernel choice, caches


def milliseconds_per_call(function: Callable[[], object], calls: int, device: torch.device, warmup: int = WARMUP_CALLS) -> float:
    for _ in range(warmup):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e3


def step_pieces(batch_size: int, bf16: bool, channels_last: bool, device: torch.device) -> dict[str, Callable[[], object]]:
    """One plain training step of SeedCNN on random uint8 data held on ``device``, and its pieces, ready to call."""
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (50_000,), device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    network = SeedCNN().to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, fused=True)
    index = torch.randint(0, 50_000, (batch_size,), device=device)

    def augmented_batch() -> torch.Tensor:
        return normalize(seed_augment(images.index_select(0, index)))

    def forward_backward(batch: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = network(batch.contiguous(memory_format=memory_format))
            loss = F.cross_entropy(logits, labels.index_select(0, index), label_smoothing=0.1)
        loss.backward()

    def whole_step() -> None:
        forward_backward(augmented_batch())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    fixed_batch = augmented_batch()
    return {  # timed in this order: the Adam step after forward + backward has made the gradients
        "batch (cut, augment, normalise)": augmented_batch,
        "forward + backward": lambda: forward_backward(fixed_batch),
        "Adam step (fused)": optimizer.step,
        "whole step": whole_step,
    }


def time_pieces(
    batch_size: int, bf16: bool, channels_last: bool, steps: int, device: torch.device, warmup: int
) -> dict[str, float]:
    pieces = step_pieces(batch_size, bf16, channels_last, device)
    return {name: milliseconds_per_call(piece, steps, device, warmup) for name, piece in pieces.items()}


def machine_speed(steps: int, device: torch.device) -> float:
    """Milliseconds per whole plain step at seed_bf16's batch, precision and layout as this machine runs it
    (32, channels_last, bf16; fp32 on a CPU without bf16 units, as the recipe then trains).

    The same work at every call: on a shared machine whose speed drifts within the hour, a reading
    taken before and after a benchmark run says how fast the machine was while it ran
    (``scripts/benchmark.py`` records both beside every row).
    """
    bf16 = device.type != "cpu" or has_bf16_units()
    return milliseconds_per_call(step_pieces(32, bf16, True, device)["whole step"], steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="timed calls of each piece, after the untimed ones")
    # On a CPU without bf16 units the bf16 rows are emulated and many times slower (docs/speed.md): there
    # the untimed calls of each piece are most of a short call's time.
    parser.add_argument("--warmup", type=int, default=WARMUP_CALLS, help="untimed calls of each piece before the timed ones")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    configure_cpu_training()  # as a recipe runs: before torch starts its worker threads
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    for row, (batch_size, bf16, channels_last) in enumerate(SETTINGS):
        times = time_pieces(batch_size, bf16, channels_last, args.steps, device, args.warmup)
        if row == 0:
            print("| batch | precision | layout | " + " | ".join(times) + " |")
            print("| --- " * (len(times) + 3) + "|")
        precision, layout = "bf16" if bf16 else "fp32", "channels_last" if channels_last else "NCHW"
        cells = " | ".join(f"{ms:.3f} ms" for ms in times.values())
        print(f"| {batch_size} | {precision} | {layout} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
