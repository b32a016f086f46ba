"""scripts/sweep.py on tiny data: every grid point trained once through fit.py's flags, a study shared by two
workers, a killed worker's study resumed, a TPE search, refused sweep files; scripts/plot_sweep.py's output."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import ROOT
from lit_cifar.errors import UserError
from lit_cifar.sweep import load_sweep

TINY = ["--data.download", "false", "--data.val_size", "10", "--data.batch_size", "16", "--trainer.enable_progress_bar",
        "false", "--trainer.enable_checkpointing", "false"]


def write_sweep(path: Path, studies: dict, **top) -> Path:
    path.write_text(yaml.safe_dump({"studies": studies, **top}))
    return path


def sweep(tmp_path: Path, data_dir: Path, sweep_file: Path, *args: str, wait: bool = True, heartbeat: int = 1,
          timeout: int = 600):
    command = [sys.executable, str(ROOT / "scripts" / "sweep.py"), str(sweep_file), "--heartbeat_interval", str(heartbeat),
               "--data.data_dir", str(data_dir), *TINY, *args]
    if not wait:  # its own process group, so a kill takes the whole worker
        return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def trials(tmp_path: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{tmp_path / 'lightning_logs' / 'sweeps' / 'optuna.db'}"
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def completed_points(found: list, names: list[str]) -> list[tuple]:
    return sorted(tuple(t.params[name] for name in names) for t in found if t.state == TrialState.COMPLETE)


def test_a_grid_trains_every_point_once_with_its_flags_and_a_rerun_adds_nothing(python_data_dir, tmp_path):
    sweep_file = write_sweep(tmp_path / "grid.yaml", {"penalties": {
        "grid": {"model.regularization": ["l1", "l2"], "model.reg_lambda": [0.001, 0.1]},
        "follow": {"model.regularization": {"l1": ["--max_epochs", "2"]}},
    }}, fit_args=["--max_epochs", "1"])
    run = sweep(tmp_path, python_data_dir, sweep_file)
    assert run.returncode == 0, run.stderr
    found = trials(tmp_path, "penalties")
    assert completed_points(found, ["model.regularization", "model.reg_lambda"]) == [
        ("l1", 0.001), ("l1", 0.1), ("l2", 0.001), ("l2", 0.1)]
    assert len(found) == 4
    for trial in found:
        assert 0 <= trial.value <= 1 and trial.value == trial.user_attrs["Accuracy/val"]
        assert {"Accuracy/train", "Penalty/train", "Sparsity/all", "WeightNorm/L2/all", "worker"} <= set(trial.user_attrs)
        run_dir = tmp_path / "lightning_logs" / "sweeps" / "penalties" / f"trial_{trial.number}"
        hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
        assert hparams["regularization"] == trial.params["model.regularization"]
        assert hparams["reg_lambda"] == trial.params["model.reg_lambda"]
        config = yaml.safe_load((run_dir / "config.yaml").read_text())  # follow: l1 trains 2 epochs, l2 the file's 1
        assert config["trainer"]["max_epochs"] == (2 if trial.params["model.regularization"] == "l1" else 1)
        assert list(run_dir.glob("events.out.tfevents.*"))
    again = sweep(tmp_path, python_data_dir, sweep_file)
    assert again.returncode == 0, again.stderr
    assert len(trials(tmp_path, "penalties")) == 4


def test_two_workers_on_one_sqlite_study_run_distinct_trials(python_data_dir, tmp_path):
    sweep_file = write_sweep(tmp_path / "grid.yaml", {"shared": {
        "grid": {"model.reg_lambda": [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008]},
    }}, fit_args=["--max_epochs", "2", "--model.regularization", "l2"])
    workers = [sweep(tmp_path, python_data_dir, sweep_file, wait=False) for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr
    found = trials(tmp_path, "shared")
    complete = [t for t in found if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.reg_lambda"] for t in complete) == [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008]
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both worked on it
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in found)  # a pruned one: a point both took at once


def test_a_killed_sweep_resumes_keeping_completed_trials_and_running_the_interrupted_one_again(python_data_dir, tmp_path):
    sweep_file = write_sweep(tmp_path / "grid.yaml", {"resumed": {
        "grid": {"model.reg_lambda": [0.001, 0.002, 0.003]},
    }}, fit_args=["--max_epochs", "6", "--model.regularization", "l2"])
    worker = sweep(tmp_path, python_data_dir, sweep_file, wait=False)
    database = tmp_path / "lightning_logs" / "sweeps" / "optuna.db"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it while its second trial trains
        states = []
        if database.exists():
            try:
                with sqlite3.connect(database) as connection:
                    states = [state for (state,) in connection.execute("SELECT state FROM trials ORDER BY number")]
            except sqlite3.OperationalError:  # the tables are not made yet
                pass
        if states == ["COMPLETE", "RUNNING"]:
            time.sleep(0.5)  # into its training, as a kill usually is (one at its first instant is tested too)
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the sweep never had one trial done and one running: {states}, {worker.stderr.read() if worker.poll() else ''}")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.communicate()  # reaped, its pipes closed
    before = trials(tmp_path, "resumed")
    done, killed = before[0], before[1]
    assert killed.state == TrialState.RUNNING  # what a SIGKILL leaves

    resumed = sweep(tmp_path, python_data_dir, sweep_file)
    assert resumed.returncode == 0, resumed.stderr
    after = trials(tmp_path, "resumed")
    assert completed_points(after, ["model.reg_lambda"]) == [(0.001,), (0.002,), (0.003,)]  # each once
    kept = after[0]
    assert (kept.state, kept.value, kept.datetime_complete) == (TrialState.COMPLETE, done.value, done.datetime_complete)
    assert len(list((tmp_path / "lightning_logs" / "sweeps" / "resumed" / "trial_0").glob("events.*"))) == 1  # not rerun
    assert after[1].state == TrialState.FAIL
    retry = next(t for t in after if killed.number in t.system_attrs.get("retry_history", []))
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_run_again(python_data_dir, tmp_path):
    sweep_file = write_sweep(tmp_path / "grid.yaml", {"early": {"grid": {"model.reg_lambda": [0.001]}}},
                             fit_args=["--max_epochs", "1"])
    (spec,) = load_sweep(sweep_file)
    database = tmp_path / "lightning_logs" / "sweeps" / "optuna.db"
    database.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="early", storage=f"sqlite:///{database}", load_if_exists=True,
                                sampler=optuna.samplers.GridSampler(spec.grid, seed=0), direction="maximize")
    study.set_user_attr("definition", spec.definition())
    study.ask()  # and died: RUNNING, with neither a heartbeat nor a worker's name, which Optuna never calls stale
    run = sweep(tmp_path, python_data_dir, sweep_file, timeout=120)
    assert run.returncode == 0, run.stderr
    found = trials(tmp_path, "early")
    assert [t.state for t in found] == [TrialState.FAIL, TrialState.COMPLETE]
    assert found[1].params == {"model.reg_lambda": 0.001} and found[1].system_attrs["retry_history"] == [0]


def test_a_tpe_search_runs_its_number_of_trials_within_its_space(python_data_dir, tmp_path):
    sweep_file = write_sweep(tmp_path / "tpe.yaml", {"tuned": {
        "sampler": "tpe", "n_trials": 3,
        "space": {"model.reg_lambda": {"low": 1e-5, "high": 1e-2, "log": True}, "model.regularization": ["l1", "l2"]},
    }}, fit_args=["--max_epochs", "1"])
    run = sweep(tmp_path, python_data_dir, sweep_file)
    assert run.returncode == 0, run.stderr
    found = trials(tmp_path, "tuned")
    assert [t.state for t in found] == [TrialState.COMPLETE] * 3
    assert all(1e-5 <= t.params["model.reg_lambda"] <= 1e-2 and t.params["model.regularization"] in ("l1", "l2") for t in found)


def test_plot_sweep_writes_each_report(python_data_dir, tmp_path):
    sweep_file = write_sweep(tmp_path / "grid.yaml", {"few": {
        "grid": {"data.train_per_class": [1, 2], "seed_everything": [0, 1], "mode": ["plain", "no_augment"]},
        "choices": {"mode": {"plain": [], "no_augment": ["--data.augment", "false"]}},
    }}, fit_args=["--max_epochs", "1", "--data.val_size", "0"], metric="Accuracy/test", test=True, reports={
        "curve": {"studies": ["few"], "x": "data.train_per_class", "log_x": True, "lines": ["mode"],
                  "panels": ["Accuracy/test"], "table": "grid"},
        "best": {"studies": ["few"], "x": "data.train_per_class", "lines": ["mode"], "panels": ["Accuracy/test", "Sparsity/all"]},
    })
    run = sweep(tmp_path, python_data_dir, sweep_file)
    assert run.returncode == 0, run.stderr
    plot = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_sweep.py"), str(sweep_file)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plot.returncode == 0, plot.stderr
    out = tmp_path / "lightning_logs" / "sweeps"
    assert (out / "curve.png").stat().st_size > 0 and (out / "best.png").stat().st_size > 0
    curve = (out / "curve.md").read_text().splitlines()
    assert curve[2:4] == ["| mode | 1 | 2 |", "| --- | --- | --- |"]
    assert all({"Accuracy/train", "Accuracy/test"} <= set(t.user_attrs) for t in trials(tmp_path, "few"))  # fit's and test's
    values = {t.params["mode"]: [] for t in trials(tmp_path, "few")}
    for trial in trials(tmp_path, "few"):
        if trial.params["data.train_per_class"] == 1:
            values[trial.params["mode"]].append(trial.value)
    row = next(line for line in curve if line.startswith("| no_augment |"))
    mean = sum(values["no_augment"]) / 2
    assert row.split(" | ")[1].startswith(f"{mean:.1%}")  # the mean over the two seeds


@pytest.mark.parametrize(("content", "message"), [
    ({"studies": {}}, "needs a `studies:` mapping"),
    ({"studies": {"a": {"grid": {"x": [1]}}}, "metrics": "y"}, "unknown key 'metrics'"),
    ({"studies": {"a": {"grid": {"x": [1]}, "seed": 1}}}, "study a: unknown key 'seed'"),
    ({"studies": {"a": {"sampler": "random", "grid": {"x": [1]}}}}, "sampler 'random' is not one of grid, tpe"),
    ({"studies": {"a": {"sampler": "tpe", "space": {"x": [1, 2]}}}}, "a tpe study needs `space:`"),
    ({"studies": {"a": {"grid": {"mode": ["p", "q"]}, "choices": {"mode": {"p": []}}}}}, "choices.mode must give the flags"),
    ({"studies": {"a": {"grid": {"x": [1]}}}, "metric": "Accuracy/test"}, "metric Accuracy/test needs `test: true`"),
    ({"studies": {"a": {"grid": {"x": [1]}}}, "cli": "lit_cifar.module.CIFARClassifier"}, "is not lit_cifar.cli.CifarCLI"),
])
def test_sweep_files_that_cannot_run_get_one_line(tmp_path, content, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(content))
        load_sweep(path)


def test_a_changed_study_definition_is_refused_and_the_script_says_so(python_data_dir, tmp_path):
    first = write_sweep(tmp_path / "grid.yaml", {"s": {"grid": {"model.reg_lambda": [0.001]}}}, fit_args=["--max_epochs", "1"])
    assert sweep(tmp_path, python_data_dir, first).returncode == 0
    changed = write_sweep(tmp_path / "grid.yaml", {"s": {"grid": {"model.reg_lambda": [0.001, 0.01]}}}, fit_args=["--max_epochs", "1"])
    run = sweep(tmp_path, python_data_dir, changed)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: study s in the storage was made from another definition")


def test_a_storage_url_that_opens_nothing_gets_one_line(python_data_dir, tmp_path):
    sweep_file = write_sweep(tmp_path / "grid.yaml", {"s": {"grid": {"model.reg_lambda": [0.001]}}})
    run = sweep(tmp_path, python_data_dir, sweep_file, "--storage", "nonsense")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: --storage nonsense: not a database URL Optuna can open")


def test_the_projects_sweep_files_and_their_reports_load():
    from lit_cifar.sweep_report import load_reports

    for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
        specs = load_sweep(path)
        reports = load_reports(yaml.safe_load(path.read_text()), path)
        assert specs and reports, path
        assert {study for report in reports for study in report.studies} <= {spec.name for spec in specs}, path


def test_plot_sweep_without_a_storage_to_read_gets_one_line(tmp_path):
    plot = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_sweep.py"), str(ROOT / "configs" / "sweeps" / "zero_shot.yaml"),
                           "--storage", f"sqlite:///{tmp_path / 'missing' / 'optuna.db'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plot.returncode == 2
    assert plot.stderr.strip().splitlines()[-1].startswith(f"error: --storage sqlite:///{tmp_path / 'missing' / 'optuna.db'}: no Optuna storage")
