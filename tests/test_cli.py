"""The command line as a user runs it: scripts in a subprocess, parsing in-process where that is enough."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_cifar import cpu
from lit_cifar.cli import CifarCLI, flat, main
from lit_cifar.data import CIFAR10DataModule
from lit_cifar.module import CIFARClassifier

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data.val_size", "10", "--data.batch_size", "16", "--data.download", "false"]


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def scalar_tags(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_fit_then_test_write_the_seeds_tags_per_epoch_and_checkpoints(python_data_dir, tmp_path):
    fit = run_script("fit.py", "--data.data_dir", str(python_data_dir), "--max_epochs", "2", *TINY, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    assert "Tip" not in fit.stdout + fit.stderr and "Warning" not in fit.stderr
    run_dir = tmp_path / "lightning_logs" / "version_0"
    tags = scalar_tags(run_dir)
    for tag in ("Loss/train", "Accuracy/train", "Loss/val", "Accuracy/val"):
        assert [step for step, _ in tags[tag]] == [0, 1], tag  # once per epoch, the epoch as x-axis
    assert "hp_metric" not in tags
    checkpoints = {path.name for path in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch") for name in checkpoints)

    last = run_dir / "checkpoints" / "last.ckpt"
    test = run_script("test.py", "--ckpt_path", str(last), "--data.data_dir", str(python_data_dir), *TINY, cwd=tmp_path)
    assert test.returncode == 0, test.stderr
    test_tags = scalar_tags(tmp_path / "lightning_logs" / "version_1")
    assert {"Loss/test", "Accuracy/test"} <= set(test_tags)
    assert 0 <= test_tags["Accuracy/test"][0][1] <= 1

    # A second run in the same folder gets its own version and finishes.
    again = run_script("fit.py", "--data.data_dir", str(python_data_dir), "--max_epochs", "1", *TINY, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "lightning_logs" / "version_2" / "checkpoints" / "last.ckpt").is_file()


def parse(*args: str) -> CifarCLI:
    return CifarCLI(args=list(args), run=False)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {"max_epochs": 20, "precision": "32-true"}),
        (["--max_epochs", "3", "--precision", "bf16-mixed"], {"max_epochs": 3, "precision": "bf16-mixed"}),
        (["--trainer.max_epochs", "4", "--trainer.precision", "bf16-mixed"], {"max_epochs": 4, "precision": "bf16-mixed"}),
        (["--trainer.max_epochs", "4", "--max_epochs", "5"], {"max_epochs": 5}),
    ],
)
def test_short_and_dotted_trainer_flags_reach_the_trainer(args, expected):
    trainer = parse(*args).trainer
    assert trainer.max_epochs == expected["max_epochs"]
    if "precision" in expected:
        assert trainer.precision == expected["precision"]


def test_short_accelerator_and_devices_reach_the_trainer():
    for args in (["--accelerator", "cpu", "--devices", "1"], ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]):
        trainer = parse(*args).trainer
        assert type(trainer.accelerator).__name__ == "CPUAccelerator" and trainer.num_devices == 1


def test_defaults_are_the_seeds_recipe():
    cli = parse()
    assert cli.datamodule.batch_size == 32 and cli.datamodule.augmentation is not None
    assert cli.trainer.max_epochs == 20
    assert cli.model.configure_optimizers().defaults["lr"] == 1e-3


def test_a_config_file_and_print_config(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"max_epochs": 7}, "model": {"regularization": "l1"}}))
    cli = parse("--config", str(config))
    assert cli.trainer.max_epochs == 7 and cli.model.regularization == "l1"
    with pytest.raises(SystemExit) as exit_:
        main("fit", ["--config", str(config), "--print_config"])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_epochs"] == 7 and printed["model"]["regularization"] == "l1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.regularization", "l3"], "model.regularization"),
        (["--model.reg_lambda", "-1"], "--model.reg_lambda must be at least 0"),
        (["--model.l1_ratio", "1.5"], r"--model.l1_ratio must be in [0, 1]"),
        (["--model.dropout", "1"], "--model.dropout must be in [0, 1)"),
        (["--data.batch_size", "0"], "--data.batch_size must be at least 1"),
        (["--data.val_size", "-1"], "--data.val_size must be at least 0"),
        (["--model.network", "airbench", "--model.dropout", "0.2"], "applies to the seed_cnn network only"),
        (["--model.norm_bias_lr_scale", "0"], "--model.norm_bias_lr_scale must be above 0"),
        (["--data.augmentation", "crop_flip", "--data.augment_backend", "kornia"], "applies to the seed's augmentation only"),
        (["--accelerator", "gpu"], "no GPU was found"),
        (["--trainer.accelerator", "gpu"], "no GPU was found"),
    ],
)
def test_bad_values_fail_at_once_naming_the_flag(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main("fit", args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"), [([], "--ckpt_path is required"), (["--ckpt_path", "missing.ckpt"], "missing.ckpt: no such file")]
)
def test_test_needs_an_existing_checkpoint(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main("test", args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_no_gpu_case_is_checked_only_without_a_gpu():
    assert not torch.cuda.is_available()  # conftest hides GPUs, so the GPU error cases above always apply


def test_model_and_data_flags_never_share_a_name():
    """Lightning logs the model's and the data module's hyperparameters together and refuses a name in both
    with two values (``--model.cuda_graph`` and a data module's ``cuda_graph`` once stopped a run so)."""
    model = set(inspect.signature(CIFARClassifier).parameters)
    data = set(inspect.signature(CIFAR10DataModule).parameters)
    assert not model & data


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_parses_into_the_values_it_states(config, monkeypatch):
    monkeypatch.setattr(cpu, "has_bf16_units", lambda: True)  # a CPU that keeps a recipe's bf16
    written = flat(yaml.safe_load(config.read_text()))
    assert written
    cli = parse("--config", str(config))
    for key, value in written.items():
        assert cli.config[key] == value, key
    trainer = cli.trainer
    assert trainer.max_epochs == written.get("trainer.max_epochs", 20)
    assert trainer.precision == written.get("trainer.precision", "32-true")
    assert cli.datamodule.batch_size == written.get("data.batch_size", 32)


@pytest.mark.parametrize("bf16_units", [True, False], ids=["bf16 units", "no bf16 units"])
def test_a_recipes_bf16_runs_in_fp32_on_a_cpu_without_bf16_units_unless_the_command_asks(bf16_units, monkeypatch, capsys):
    monkeypatch.setattr(cpu, "has_bf16_units", lambda: bf16_units)
    recipe = ["--config", str(ROOT / "configs" / "seed_bf16.yaml")]
    assert parse(*recipe).trainer.precision == ("bf16-mixed" if bf16_units else "32-true")
    said = "Running in 32-true, not the bf16-mixed asked for: this CPU" in capsys.readouterr().err
    assert said == (not bf16_units)
    for given in (["--precision", "bf16-mixed"], ["--trainer.precision=bf16-mixed"]):
        assert parse(*recipe, *given).trainer.precision == "bf16-mixed"
    assert "Running in 32-true" not in capsys.readouterr().err


def test_benchmark_quick_runs_every_recipe_and_writes_its_tables(python_data_dir, tmp_path):
    out = tmp_path / "results"
    bench = run_script(
        "benchmark.py", "--data_dir", str(python_data_dir), "--quick", "--out", str(out), "--probe_steps", "1",
        "--extra_args", "--data.val_size 10 --data.download false", cwd=tmp_path,
    )
    assert bench.returncode == 0, bench.stderr
    results = json.loads((out / "benchmark.json").read_text())
    assert [r["recipe"] for r in results] == ["seed_loop", "seed", "seed_bf16", "fast", "speedrun"]
    for result in results:
        assert result["epochs"] == 1 and result["images_per_second"] > 0 and 0 <= result["final_test_accuracy"] <= 1
        assert result["probe_ms"]["before"] > 0 and result["probe_ms"]["after"] > 0
    machine, table = (out / "benchmark.md").read_text().split("\n\n")
    assert machine.startswith("machine: ") and "AVX-512 BF16: " in machine and "AMX: " in machine and "GPU: none" in machine
    assert all(row["machine"] == machine for row in results)
    assert table.count("\n") == 7 and "speed vs seed loop" in table and "probe ms before / after" in table

    # Without --out the table is printed only.
    printed = run_script("benchmark.py", "--data_dir", str(python_data_dir), "--quick", "--recipes", "seed_loop",
                         "--probe_steps", "0", cwd=tmp_path)
    assert printed.returncode == 0 and "| seed_loop |" in printed.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "results"]


@pytest.mark.parametrize(
    ("script", "flag", "message"),
    [
        ("benchmark.py", "--probe_steps", "--probe_steps must be at least 0"),
        ("step_timing.py", "--steps", "--steps must be at least 1"),
        ("step_timing.py", "--warmup", "--warmup must be at least 0"),
    ],
)
def test_timing_scripts_refuse_negative_step_counts(script, flag, message, tmp_path):
    extra = ["--data_dir", str(tmp_path)] if script == "benchmark.py" else []
    refused = run_script(script, *extra, flag, "-1", cwd=tmp_path)
    assert refused.returncode == 2 and message in refused.stderr


def test_step_timing_prints_a_row_per_setting(tmp_path):
    timing = run_script("step_timing.py", "--steps", "1", "--warmup", "1", cwd=tmp_path)
    assert timing.returncode == 0, timing.stderr
    rows = [line for line in timing.stdout.splitlines() if line.startswith("| 32 ") or line.startswith("| 128 ")]
    assert len(rows) == 4
    for row in rows:
        milliseconds = [float(cell.split()[0]) for cell in row.strip("| ").split(" | ")[3:]]
        assert len(milliseconds) == 4 and all(ms > 0 for ms in milliseconds)


def test_output_into_a_file_gets_one_line_per_epoch(python_data_dir, tmp_path):
    fit = run_script("fit.py", "--data.data_dir", str(python_data_dir), "--max_epochs", "3", *TINY, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    output = fit.stdout + fit.stderr  # a pipe, as a file or a CI log: not a terminal
    assert "\r" not in output
    lines = [line for line in fit.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all("Loss/train" in line and "Accuracy/val" in line for line in lines)


def test_help_puts_the_projects_options_first_and_a_refused_flag_gets_one_line(tmp_path):
    fit_help = run_script("fit.py", "--help", cwd=tmp_path).stdout
    assert fit_help.startswith("usage: fit.py [--config FILE] [--ckpt_path CKPT]")
    order = [fit_help.index(f"\n  {flag} ") for flag in ("--ckpt_path", "--model.regularization", "--data.data_dir",
                                                        "--checkpoint.every_n_train_steps", "--trainer.accelerator")]
    assert order == sorted(order)
    assert "'last' (the most recently written last.ckpt" in " ".join(fit_help.split())
    test_help = " ".join(run_script("test.py", "--help", cwd=tmp_path).stdout.split())
    assert test_help.startswith("usage: test.py") and "--ckpt_path CKPT_PATH Required." in test_help
    assert "(ignored here: the checkpoint's settings are used, --model.tta apart)" in test_help

    refused = run_script("fit.py", "--model.regularization", "l3", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "error: --model.regularization l3: expected one of none, l1, l2, elastic_net (fit.py --help lists the options)"]
