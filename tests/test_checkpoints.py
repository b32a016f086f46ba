"""Crashes, resumes, concurrent runs, bad and old checkpoints, and reproducibility, run as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, fit_in_subprocess, recorded_steps, whole_and_killed_runs
from lit_cifar import cpu
from lit_cifar.checkpoints import AtomicCheckpointIO
from lit_cifar.cli import main
from lit_cifar.sources import CACHE_DIR, load

TINY = ["--data.val_size", "10", "--data.batch_size", "8", "--data.download", "false", "--trainer.enable_progress_bar", "false"]
# A checkpoint and the run's config.yaml written by main at c302466, before the code was redesigned: one epoch of
# the seed's recipe on the `tiny_cifar` data with --data.val_size 10 --data.batch_size 16.
OLD_CHECKPOINT = ROOT / "tests" / "data" / "seed_main_c302466.ckpt"
OLD_CONFIG = ROOT / "tests" / "data" / "seed_main_c302466_config.yaml"


def fit(data_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return fit_in_subprocess(data_dir, cwd, *TINY, *args)


def final_state(run_dir: Path) -> dict:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return {"epoch": checkpoint["epoch"], "step": checkpoint["global_step"], "weights": checkpoint["state_dict"]}


def test_a_killed_run_resumed_with_ckpt_path_last_ends_as_an_uninterrupted_one(learnable_data_dir, tmp_path):
    # 50 training images in batches of 8: 7 steps per epoch; a checkpoint every 3 steps.
    every = ["--max_epochs", "3", "--checkpoint.every_n_train_steps", "3"]
    # SIGKILLed in epoch 1, two steps after the checkpoint at step 9.
    whole_and_killed_runs(learnable_data_dir, tmp_path, [*TINY, *every], kill_at_step=11)
    resumed = fit(learnable_data_dir, tmp_path / "crash", *every, "--ckpt_path", "last",
                  "--trainer.callbacks+=crash_callbacks.RecordSteps")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from lightning_logs/version_0/checkpoints/last.ckpt" in resumed.stderr
    # It went on from the checkpoint: a run started afresh would also end on the same weights (same seed).
    steps = recorded_steps(tmp_path / "crash" / "steps.json")
    assert steps["started_at"] == 9 and steps["trained"] == list(range(10, 22))

    expected = final_state(tmp_path / "whole" / "lightning_logs" / "version_0")
    got = final_state(tmp_path / "crash" / "lightning_logs" / "version_1")
    assert (got["epoch"], got["step"]) == (expected["epoch"], expected["step"]) == (2, 21)
    for name, tensor in expected["weights"].items():
        assert torch.equal(got["weights"][name], tensor), name  # bit for bit, on the CPU


def test_ckpt_path_last_takes_the_newest_last_checkpoint_of_the_earlier_runs(python_data_dir, tmp_path, capsys):
    for _ in range(2):
        main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "1"])
    runs = tmp_path / "lightning_logs"
    newer = os.stat(runs / "version_1" / "checkpoints" / "last.ckpt").st_mtime_ns + 10**9
    os.utime(runs / "version_0" / "checkpoints" / "last.ckpt", ns=(newer, newer))  # version_0 written last
    capsys.readouterr()
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "2", "--ckpt_path", "last"])
    assert "Resuming from lightning_logs/version_0/checkpoints/last.ckpt" in capsys.readouterr().err
    assert torch.load(runs / "version_2" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 14


def test_a_checkpoint_written_before_the_redesign_evaluates_as_it_did_and_resumes(python_data_dir, capsys):
    tiny = ["--data.data_dir", str(python_data_dir), "--data.val_size", "10", "--data.batch_size", "16",
            "--data.download", "false", "--trainer.enable_progress_bar", "false"]
    main("test", [*tiny, "--ckpt_path", str(OLD_CHECKPOINT)])
    out = capsys.readouterr().out
    # What main printed for this checkpoint and data at c302466.
    assert "2.3080339431762695" in out.split("Loss/test")[1].split("\n")[0]
    assert "0.15000000596046448" in out.split("Accuracy/test")[1].split("\n")[0]
    main("fit", [*tiny, "--max_epochs", "2", "--ckpt_path", str(OLD_CHECKPOINT)])
    resumed = torch.load("lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert (resumed["epoch"], resumed["global_step"]) == (1, 8)


def test_a_run_config_saved_before_the_redesign_repeats_the_run(python_data_dir, tmp_path):
    # Its logger's class path is lit_cifar.safety.TensorBoardLogger, the name before the logger had a file of its own.
    assert "lit_cifar.safety.TensorBoardLogger" in OLD_CONFIG.read_text()
    main("fit", ["--config", str(OLD_CONFIG), "--data.data_dir", str(python_data_dir)])
    repeated = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert repeated["global_step"] == 4 and repeated["datamodule_hyper_parameters"]["batch_size"] == 16


def test_last_checkpoint_is_the_latest_state_when_the_watched_metric_stopped_improving(python_data_dir, tmp_path):
    # Watching the epoch for its minimum: epoch 0 stays the best, and last.ckpt must still follow the run.
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "3", "--checkpoint.monitor", "epoch",
                 "--checkpoint.mode", "min"])
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 21
    assert torch.load(checkpoints / "best-epoch00.ckpt", weights_only=True)["global_step"] == 7


def test_ckpt_path_last_without_an_earlier_run(python_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--ckpt_path", "last"])
    assert exit_.value.code == 2
    assert "--ckpt_path last: no earlier run under lightning_logs/ left a checkpoints/last.ckpt" in capsys.readouterr().err


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(learnable_data_dir, tmp_path):
    run = fit(learnable_data_dir, tmp_path, "--max_epochs", "3", "--trainer.callbacks+=crash_callbacks.PoisonAtStep",
              "--trainer.callbacks.step", "9")
    assert run.returncode == 2
    assert "the training loss became nan at step 10" in run.stderr and "learning rate" in run.stderr
    # The checkpoint to resume from is the last one written, at the end of epoch 0 (7 steps).
    assert "resume with --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt, written before" in run.stderr
    assert "Traceback" not in run.stderr
    state = final_state(tmp_path / "lightning_logs" / "version_0")
    assert state["epoch"] == 0 and all(torch.isfinite(w).all() for w in state["weights"].values())


def test_a_loss_that_diverges_before_any_checkpoint_says_to_start_again(learnable_data_dir, tmp_path):
    run = fit(learnable_data_dir, tmp_path, "--max_epochs", "1", "--trainer.callbacks+=crash_callbacks.PoisonAtStep",
              "--trainer.callbacks.step", "2")
    assert run.returncode == 2 and "start again: no checkpoint was written before the loss diverged" in run.stderr


def test_a_checkpoint_killed_while_being_written_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)

    def killed(obj, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_two_runs_started_together_on_one_data_dir_both_finish(python_data_dir, tmp_path):
    env = {**os.environ}
    command = [sys.executable, str(ROOT / "scripts" / "fit.py"), "--data.data_dir", str(python_data_dir), *TINY,
               "--max_epochs", "1"]
    runs = [
        subprocess.Popen([*command, "--model.regularization", mode], cwd=tmp_path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for mode in ("l1", "l2")
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    versions = sorted(p.name for p in (tmp_path / "lightning_logs").iterdir())
    assert versions == ["version_0", "version_1"]
    regularizations = {(tmp_path / "lightning_logs" / v / "config.yaml").read_text().split("regularization: ")[1].split()[0]
                       for v in versions}
    assert regularizations == {"l1", "l2"}
    assert [p.suffix for p in (python_data_dir / CACHE_DIR).iterdir()] == [".pt"]
    assert len(load(python_data_dir).train_labels) == 60


def test_checkpoints_load_with_weights_only(python_data_dir, tmp_path):
    assert fit(python_data_dir, tmp_path, "--max_epochs", "1").returncode == 0
    checkpoint = torch.load(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert {"state_dict", "optimizer_states", "callbacks", "hyper_parameters"} <= set(checkpoint)


@pytest.mark.parametrize("kind", ["unrelated", "other_model", "unsafe"])
def test_bad_checkpoints_are_refused_with_a_message(python_data_dir, tmp_path, kind, capsys):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "unrelated":
        path.write_text("not a checkpoint at all")
        message = f"{path} is not a checkpoint"
    elif kind == "other_model":
        torch.save({"state_dict": {"network.fc1.weight": torch.zeros(3, 3)}}, path)
        message = f"{path} is a checkpoint of another model"
    else:
        torch.save({"state_dict": {}, "hook": os.getcwd}, path)  # loading it would need a global: code
        message = f"{path} holds objects that are not safe to load"
    for subcommand in ("fit", "test"):
        with pytest.raises(SystemExit) as exit_:
            main(subcommand, ["--data.data_dir", str(python_data_dir), *TINY, "--ckpt_path", str(path)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "lightning_logs").exists()  # refused before anything was written


def test_the_same_seed_gives_the_same_metrics(python_data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = []
    for attempt in ("a", "b"):
        (tmp_path / attempt).mkdir()
        run = fit(python_data_dir, tmp_path / attempt, "--max_epochs", "2", "--seed_everything", "7")
        assert run.returncode == 0, run.stderr
        events = EventAccumulator(str(tmp_path / attempt / "lightning_logs" / "version_0"))
        events.Reload()
        scalars.append({tag: [e.value for e in events.Scalars(tag)] for tag in ("Loss/train", "Accuracy/val", "Loss/val")})
    assert scalars[0] == scalars[1]


def test_two_process_ddp_on_the_cpu_logs_the_accuracy_of_its_checkpoint(learnable_data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_cifar.cli import CifarCLI
    from lit_cifar.module import CIFARClassifier

    run = fit(learnable_data_dir, tmp_path, "--max_epochs", "2", "--trainer.strategy", "ddp", "--trainer.devices", "2",
              "--trainer.accelerator", "cpu", "--data.val_size", "15")
    assert run.returncode == 0, run.stderr
    run_dir = tmp_path / "lightning_logs" / "version_0"
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]  # logged once
    events = EventAccumulator(str(run_dir))
    events.Reload()
    logged = events.Scalars("Accuracy/val")[-1].value

    cli = CifarCLI(args=["--data.data_dir", str(learnable_data_dir), "--data.val_size", "15", "--trainer.logger", "false",
                         "--trainer.enable_checkpointing", "false"],
                   run=False)
    model = CIFARClassifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    (single,) = cli.trainer.validate(model, cli.datamodule, verbose=False)
    assert single["Accuracy/val"] == pytest.approx(logged, abs=1e-6)


def test_two_process_ddp_trains_the_speedrun_past_its_whitening_bias_freeze(learnable_data_dir, tmp_path):
    # Under DDP the frozen bias's gradient is dropped rather than its requires_grad switched off,
    # which DDP would refuse at the next step.
    run = fit(learnable_data_dir, tmp_path, "--config", str(ROOT / "configs" / "speedrun.yaml"), "--data.val_size", "0",
              "--data.batch_size", "8", "--trainer.max_steps", "12", "--model.whitening_bias_epochs", "1", "--trainer.strategy", "ddp",
              "--trainer.devices", "2", "--trainer.accelerator", "cpu")
    assert run.returncode == 0, run.stderr
    checkpoint = torch.load(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 12 and checkpoint["epoch"] == 2  # 30 images per process: 4 steps per epoch


def test_a_killed_fast_run_resumed_with_the_readmes_command_continues_its_own_recipe(learnable_data_dir, tmp_path):
    # fast.yaml: bf16, batch 128 here cut to 16, a one-cycle schedule over the run's steps: 4 steps per epoch.
    recipe = ["--config", str(ROOT / "configs" / "fast.yaml"), "--max_epochs", "3", "--data.batch_size", "16",
              "--data.val_size", "10", "--checkpoint.every_n_train_steps", "3"]
    whole_and_killed_runs(learnable_data_dir, tmp_path, recipe, kill_at_step=7)
    # The README's command: nothing but the checkpoint (and the data folder, as it lies elsewhere here).
    resumed = fit_in_subprocess(learnable_data_dir, tmp_path / "crash", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    run = tmp_path / "crash" / "lightning_logs" / "version_0"
    assert (f"Resuming from lightning_logs/version_0/checkpoints/last.ckpt (the newest of the one run's last.ckpt "
            f"under lightning_logs/) with its run's settings (lightning_logs/version_0/config.yaml), continuing in "
            f"lightning_logs/version_0") in resumed.stderr
    assert not (tmp_path / "crash" / "lightning_logs" / "version_1").exists()

    expected = torch.load(tmp_path / "whole/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    got = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    for part in ("hyper_parameters", "datamodule_hyper_parameters"):
        assert got[part] == expected[part], part  # the same recipe: fast.yaml's, not the defaults
    assert (got["epoch"], got["global_step"]) == (expected["epoch"], expected["global_step"]) == (2, 12)
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][name], tensor), name  # bit for bit, on the CPU


def test_a_resume_that_changes_a_setting_says_so_and_trains_in_a_new_folder(python_data_dir, tmp_path, capsys):
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "1"])
    capsys.readouterr()
    main("fit", ["--data.data_dir", str(python_data_dir), "--ckpt_path", "last", "--max_epochs", "2",
                 "--model.optimizer.lr", "0.002"])
    message = capsys.readouterr().err
    assert ("this command changes --max_epochs 1 -> 2; --model.optimizer.init_args.lr 0.001 -> 0.002, so it trains "
            "in a new version_N") in message
    resumed = torch.load(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    # The run's own settings where the command gave none: its batch of 8, not the default 32.
    assert resumed["datamodule_hyper_parameters"]["batch_size"] == 8 and resumed["global_step"] == 14


def test_ckpt_path_best_takes_the_newest_runs_best_checkpoint(python_data_dir, tmp_path, capsys):
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "3", "--checkpoint.monitor", "epoch",
                 "--checkpoint.mode", "min"])  # epoch 0 stays the best
    capsys.readouterr()
    main("test", ["--data.data_dir", str(python_data_dir), *TINY, "--ckpt_path", "best"])
    assert ("Evaluating lightning_logs/version_0/checkpoints/best-epoch00.ckpt (the best checkpoint of "
            "lightning_logs/version_0") in capsys.readouterr().err


def test_a_resumed_run_clears_the_temporary_file_a_killed_checkpoint_write_left(python_data_dir, tmp_path):
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "1"])
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    stale = checkpoints / ".last.ckpt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    main("fit", ["--data.data_dir", str(python_data_dir), "--ckpt_path", "last"])  # continues in version_0
    assert not stale.exists() and (checkpoints / "last.ckpt").is_file()


@pytest.mark.parametrize("root", ["runs", "runs/deeper"])
def test_default_root_dir_takes_logs_and_checkpoints_and_ckpt_path_last_looks_there(python_data_dir, tmp_path, root):
    args = ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "1", "--trainer.default_root_dir", root]
    main("fit", args)
    assert (tmp_path / root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "lightning_logs").exists()
    main("fit", [*args, "--max_epochs", "2", "--ckpt_path", "last"])
    assert torch.load(tmp_path / root / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)["epoch"] == 1


def test_an_explicit_logger_save_dir_wins_over_default_root_dir(python_data_dir, tmp_path):
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "1", "--trainer.default_root_dir", "runs",
                 "--trainer.logger.init_args.save_dir", "logs"])
    assert (tmp_path / "logs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "runs" / "lightning_logs").exists()


def test_a_run_that_fails_before_its_first_step_leaves_no_version_folder(python_data_dir, tmp_path):
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "1"])  # an earlier run stays
    with pytest.raises(SystemExit):  # refused in configure_optimizers, after set-up wrote config.yaml and events
        main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--model.optimizer.lr", "-1"])
    assert sorted(path.name for path in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
    with pytest.raises(SystemExit):
        main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--model.optimizer.lr", "-1",
                     "--trainer.default_root_dir", "new/runs"])
    assert not (tmp_path / "new").exists()  # nor the folders made to hold it


@pytest.mark.parametrize("schedule", [["OneCycleLR", "--model.scheduler.max_lr", "0.01"], ["lit_cifar.schedules.TriangularLR"]])
def test_a_resume_that_would_stretch_a_per_step_schedule_is_refused(python_data_dir, tmp_path, capsys, schedule):
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "1", "--model.scheduler", *schedule])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main("fit", ["--data.data_dir", str(python_data_dir), "--ckpt_path", "last", "--max_epochs", "2"])
    assert exit_.value.code == 2
    assert "schedule was laid out for 7 optimizer steps and this run has 14" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]


@pytest.mark.parametrize("bf16_units", [True, False], ids=["bf16 units", "no bf16 units"])
def test_evaluation_runs_at_the_precision_the_run_trained_with(bf16_units, python_data_dir, tmp_path, capsys, monkeypatch):
    main("fit", ["--data.data_dir", str(python_data_dir), *TINY, "--max_epochs", "1", "--precision", "bf16-mixed"])
    monkeypatch.setattr(cpu, "has_bf16_units", lambda: bf16_units)  # evaluated on a CPU with or without them
    test = ["--data.data_dir", str(python_data_dir), *TINY, "--ckpt_path", "last"]
    losses = {}
    for precision in ([], ["--precision", "32-true"], ["--precision", "bf16-mixed"]):
        capsys.readouterr()
        main("test", [*test, *precision])
        out, err = capsys.readouterr()
        said = "Evaluating in bf16-mixed, the precision lightning_logs/version_0 trained with" in err
        assert said == (not precision and bf16_units)  # the command's choice wins
        # Without bf16 units, the run's bf16 becomes fp32, and the command line's is kept.
        assert ("Running in 32-true, not the bf16-mixed asked for" in err) == (not precision and not bf16_units)
        losses[tuple(precision)] = out.split("Loss/test")[1].split()[0]
    trained = losses[("--precision", "bf16-mixed")]
    assert losses[()] == (trained if bf16_units else losses[("--precision", "32-true")])
    assert losses[("--precision", "32-true")] != trained  # bf16 and fp32 arithmetic: the evaluations did differ
