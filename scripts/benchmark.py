"""Measure the seed's plain loop and this project's recipes on the same machine and data, in one run.

    python scripts/benchmark.py --data_dir /path/to/cifar10            # every recipe, full length
    python scripts/benchmark.py --data_dir /path/to/cifar10 --quick    # one epoch each: a few minutes
    python scripts/benchmark.py --data_dir DIR --recipes seed fast --extra_args "--model.compile_mode default"

Each recipe runs in its own process (so memory peaks and compile caches do not mix) and
reports: seconds per training epoch (median over epochs after the first, validation excluded),
training images per second, the first epoch (where compilation lands), fit time (validation
included), the time of the final test evaluation (with the recipe's test-time augmentation), the
fit time at which test accuracy first reached each target, final test accuracy,
peak memory, and the speed against the seed's loop. Test accuracy is measured after every epoch
outside the clock, as the seed did. Results go to the terminal and, with --out, to OUT/benchmark.{json,md},
under a line that names the machine (the CPU's model and bf16 units, the GPU).

Before and after each row the parent process times a fixed plain training step (``machine_speed``
in scripts/step_timing.py: seed_bf16's batch, precision and layout as the machine runs it, no Lightning,
on the GPU if there is one): on a shared machine whose speed drifts, those two readings tell a row run
on a slow machine from slow code.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "seed_loop": None,  # scripts/seed_loop.py, the reference
    "seed": ROOT / "configs" / "seed.yaml",
    "seed_bf16": ROOT / "configs" / "seed_bf16.yaml",
    "fast": ROOT / "configs" / "fast.yaml",
    "speedrun": ROOT / "configs" / "speedrun.yaml",
}
TARGETS = (0.72, 0.90)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def summarize(recipe: str, device: torch.device, train_images: int, epochs: list[dict]) -> dict:
    steady = [e["train_seconds"] for e in epochs[1:]] or [epochs[0]["train_seconds"]]
    seconds_per_epoch = statistics.median(steady)
    reached = {
        f"{target:.0%}": next((e["fit_seconds"] for e in epochs if e["test_accuracy"] >= target), None)
        for target in TARGETS
    }
    return {
        "recipe": recipe,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "epochs": len(epochs),
        "seconds_per_epoch": seconds_per_epoch,
        "first_epoch_seconds": epochs[0]["train_seconds"],
        "images_per_second": train_images / seconds_per_epoch,
        "fit_seconds": epochs[-1]["fit_seconds"],
        # The final evaluation on the test set (with the recipe's test-time augmentation), timed on its own.
        "final_test_seconds": epochs[-1].get("test_seconds"),
        "time_to_target": reached,
        "final_test_accuracy": epochs[-1]["test_accuracy"],
        "best_test_accuracy": max(e["test_accuracy"] for e in epochs),
        "peak_memory_mib": peak_memory_mib(device),
        "per_epoch": epochs,
    }


def run_seed_loop(data_dir: Path, epochs: int) -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    from seed_loop import train_seed_loop

    from lit_cifar import sources

    data = sources.load(data_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    records, fit_seconds = [], 0.0

    def record(epoch: int, seconds: float, test_accuracy: float) -> None:
        nonlocal fit_seconds
        fit_seconds += seconds
        records.append({"epoch": epoch, "train_seconds": seconds, "fit_seconds": fit_seconds, "test_accuracy": test_accuracy})

    train_seed_loop(data, epochs, device, record)
    return summarize("seed_loop", device, len(data.train_labels), records)


def run_recipe(recipe: str, data_dir: Path, quick: bool, extra_args: list[str]) -> dict:
    from lightning.pytorch import Callback

    from lit_cifar.augment import normalize
    from lit_cifar.cli import CifarCLI, quiet_startup

    class EpochClock(Callback):
        """Times each training epoch and its validation; measures test accuracy outside the clock."""

        def __init__(self) -> None:
            self.records: list[dict] = []
            self.excluded = self.validation = 0.0

        def on_fit_start(self, trainer, module) -> None:
            self.fit_start = time.perf_counter()

        def on_train_epoch_start(self, trainer, module) -> None:
            self.epoch_start, self.validation = time.perf_counter(), 0.0

        def on_validation_epoch_start(self, trainer, module) -> None:
            self.validation_start = time.perf_counter()

        def on_validation_epoch_end(self, trainer, module) -> None:
            if not trainer.sanity_checking:
                self.validation += time.perf_counter() - self.validation_start

        def on_train_epoch_end(self, trainer, module) -> None:
            now = time.perf_counter()
            fit_seconds = now - self.fit_start - self.excluded
            test_accuracy = self.test_accuracy(trainer, module)
            test_seconds = time.perf_counter() - now
            self.excluded += test_seconds
            val_accuracy = trainer.callback_metrics.get("Accuracy/val")  # none when the recipe does not validate
            self.records.append(
                {
                    "epoch": trainer.current_epoch,
                    "train_seconds": now - self.epoch_start - self.validation,
                    "fit_seconds": fit_seconds,
                    "val_accuracy": float(val_accuracy) if val_accuracy is not None else None,
                    "test_accuracy": test_accuracy,
                    "test_seconds": test_seconds,
                }
            )

        @torch.no_grad()
        def test_accuracy(self, trainer, module) -> float:
            module.eval()
            images, labels = trainer.datamodule.splits["test"]
            correct = torch.zeros((), device=labels.device)
            with trainer.precision_plugin.forward_context():
                for start in range(0, len(labels), 1000):
                    batch = normalize(images[start : start + 1000], trainer.datamodule.normalization)
                    logits = module.predict_logits(batch)
                    correct += (logits.argmax(1) == labels[start : start + 1000]).sum()
            module.train()
            return correct.item() / len(labels)

    quiet_startup()
    args = ["--config", str(RECIPES[recipe]), "--data.data_dir", str(data_dir), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.max_epochs", "1"] if quick else []
    cli = CifarCLI(args=args + extra_args, run=False)
    clock = EpochClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, cli.datamodule)
    return summarize(recipe, cli.trainer.strategy.root_device, len(cli.datamodule.splits["train"][1]), clock.records)


def child(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir).resolve()
    if args.child == "seed_loop":
        result = run_seed_loop(data_dir, 1 if args.quick else 20)
    else:
        result = run_recipe(args.child, data_dir, args.quick, shlex.split(args.extra_args))
    result["label"] = args.label or args.child
    Path(args.result_file).write_text(json.dumps(result))


def markdown(results: list[dict]) -> str:
    seed = next((r for r in results if r["recipe"] == "seed_loop"), None)
    head = (
        "| recipe | device | epochs | s/epoch | images/s | first epoch s | fit s | final test eval s | to 72% s | to 90% s "
        "| final test | best test | peak MiB | speed vs seed loop | probe ms before / after |"
    )
    lines = [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for r in results:
        ratio = f"{r['images_per_second'] / seed['images_per_second']:.2f}x" if seed else "n/a"
        to = [f"{r['time_to_target'][t]:.0f}" if r["time_to_target"][t] is not None else "not reached" for t in ("72%", "90%")]
        test_seconds = f"{r['final_test_seconds']:.1f}" if r.get("final_test_seconds") is not None else "n/a"
        probe = r["probe_ms"]
        readings = f"{probe['before']:.2f} / {probe['after']:.2f}" if probe["before"] is not None else "n/a"
        lines.append(
            f"| {r['label']} | {r['device']} | {r['epochs']} | {r['seconds_per_epoch']:.1f} | {r['images_per_second']:.0f} "
            f"| {r['first_epoch_seconds']:.1f} | {r['fit_seconds']:.0f} | {test_seconds} | {to[0]} | {to[1]} "
            f"| {r['final_test_accuracy']:.2%} | {r['best_test_accuracy']:.2%} | {r['peak_memory_mib']:.0f} | {ratio} | {readings} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="CIFAR-10 in any layout lit_cifar accepts")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--quick", action="store_true", help="one epoch of each recipe")
    parser.add_argument("--extra_args", default="", help="more fit.py flags for every Lightning recipe, quoted")
    parser.add_argument("--label", default="", help="a suffix for the recipe names in the table")
    parser.add_argument("--out", help="also write the table as benchmark.json and benchmark.md into this folder")
    parser.add_argument("--verbose", action="store_true", help="show each run's own output")
    parser.add_argument(
        "--probe_steps", type=int, default=200, help="timed steps of the machine-speed reading before and after each row; 0: none"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.probe_steps < 0:
        parser.error(f"--probe_steps must be at least 0, got {args.probe_steps}")

    from step_timing import machine_speed

    from lit_cifar import sources
    from lit_cifar.cpu import configure_cpu_training, cpu_description

    configure_cpu_training()  # the readings are taken in this process, as a recipe runs
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def probe() -> float | None:
        return machine_speed(args.probe_steps, device) if args.probe_steps else None

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    machine = f"machine: {cpu_description()}; GPU: {gpu}"
    print(machine, flush=True)
    sources.prepare(Path(args.data_dir), download=True)  # decode once, before any clock starts
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for recipe in args.recipes:
            result_file = Path(workdir) / f"{recipe}.json"
            label = f"{recipe} {args.label}".strip() if recipe != "seed_loop" else recipe
            command = [sys.executable, str(Path(__file__).resolve()), "--child", recipe, "--result_file", str(result_file)]
            command += ["--data_dir", str(Path(args.data_dir).resolve()), "--extra_args", args.extra_args, "--label", label]
            command += ["--quick"] if args.quick else []
            print(f"running {label} ...", flush=True)
            before = probe()
            # Each child runs in the temporary folder, so its lightning_logs/ goes there.
            subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if not args.verbose else None)
            results.append({**json.loads(result_file.read_text()), "probe_ms": {"before": before, "after": probe()}})
            print(markdown(results).splitlines()[-1], flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "benchmark.json").write_text(json.dumps([{**row, "machine": machine} for row in results], indent=2))
        (out / "benchmark.md").write_text(f"{machine}\n\n{markdown(results)}")
    print(markdown(results))


if __name__ == "__main__":
    main()
