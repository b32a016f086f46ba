"""Sweeps of fit.py's flags on Optuna: each study a grid (Optuna's GridSampler) or a search (TPE), its trials
shared by any number of worker processes, on one machine or several, through one Optuna storage.

A sweep file (YAML, ``configs/sweeps/``) names the flags every trial gets and its studies:

    fit_args: [--config, configs/fast.yaml]   # every trial's fit.py flags
    metric: Accuracy/val                      # what a trial reports (maximised)
    test: false                               # also test the final weights (Accuracy/test)
    studies:
      penalties:
        grid: {model.regularization: [l1, l2], model.reg_lambda: [1.0e-4, 1.0e-2]}
        follow: {model.regularization: {l1: [--max_epochs, "9"]}}   # flags a grid value brings along
      modes:
        grid: {mode: [plain, no_augment]}
        choices: {mode: {plain: [], no_augment: [--data.augment, "false"]}}   # a named set of flags
      tuned:
        sampler: tpe
        n_trials: 20
        space: {model.reg_lambda: {low: 1.0e-6, high: 1.0e-2, log: true}, model.regularization: [none, l2]}

A grid parameter or a search dimension is a fit.py flag (``--name value``) unless ``choices`` defines it.
Each trial trains in this process through the project's LightningCLI, exactly as ``scripts/fit.py`` with
those flags would, into its own TensorBoard run (``lightning_logs/sweeps/STUDY/trial_N``), so the HParams
tab compares the trials. Its final metrics are kept with the trial in the storage.

A worker killed mid-trial stops sending its trial's heartbeat; once it is older than the grace period,
the next worker to look marks that trial failed and queues a copy, which a worker then runs (Optuna's
RetryHeartbeatStaleTrialCallback). Completed trials are never run again, and a worker waits until every
trial of a study has finished before it goes to the next study or returns.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import sqlalchemy
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from lit_cifar.callbacks import named_weights, weight_statistics
from lit_cifar.cli import CifarCLI
from lit_cifar.errors import UserError
from lit_cifar.nonfinite_loss import NonFiniteLossError

SWEEP_KEYS = {"cli", "fit_args", "metric", "test", "studies", "reports"}  # reports: lit_cifar.sweep_report
STUDY_KEYS = {"grid", "follow", "choices", "sampler", "n_trials", "space"}
# What a trial keeps beside its run's final metrics: the trained weights' norms and sparsity.
KEPT_WEIGHT_STATISTICS = ("Sparsity/all", "WeightNorm/L1/all", "WeightNorm/L2/all")


@dataclass
class StudySpec:
    """One study of a sweep file: its parameters and the flags each of their values stands for."""

    name: str
    fit_args: list[str]
    metric: str
    test: bool
    cli: str = "lit_cifar.cli.CifarCLI"
    grid: dict[str, list] | None = None
    space: dict[str, dict | list] | None = None
    n_trials: int | None = None
    choices: dict[str, dict] = field(default_factory=dict)
    follow: dict[str, dict] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """How many trials the study has when finished: the grid's points, or n_trials."""
        if self.grid is None:
            return self.n_trials
        return len(list(itertools.product(*self.grid.values())))

    def suggest(self, trial: optuna.Trial) -> dict:
        """The trial's parameter values, drawn by the study's sampler."""
        if self.grid is not None:  # GridSampler answers with the trial's grid point
            return {name: trial.suggest_categorical(name, values) for name, values in self.grid.items()}
        params = {}
        for name, dimension in self.space.items():
            if isinstance(dimension, list):
                params[name] = trial.suggest_categorical(name, dimension)
            else:
                params[name] = trial.suggest_float(name, dimension["low"], dimension["high"], log=dimension.get("log", False))
        return params

    def flags(self, params: dict) -> list[str]:
        """fit.py's flags for these parameter values, after the study's own fit_args."""
        flags = list(self.fit_args)
        for name, value in params.items():
            if name in self.choices:
                flags += self.choices[name][value]
                continue
            flags += [f"--{name}", yaml_scalar(value)]
            flags += self.follow.get(name, {}).get(value, [])
        return flags

    def definition(self) -> str:
        """What makes two runs the same study, as stored with it: the parameters and the flags."""
        return json.dumps({"cli": self.cli, "fit_args": self.fit_args, "metric": self.metric, "test": self.test, "grid": self.grid,
                           "space": self.space, "n_trials": self.n_trials, "choices": self.choices,
                           "follow": self.follow}, sort_keys=True, default=str)


def yaml_scalar(value) -> str:
    """A parameter value as LightningCLI reads it back: true/false/null, numbers as Python prints them."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def load_sweep(path: Path) -> list[StudySpec]:
    """The studies of a sweep file, checked: every mistake gets a line that names the key and the fix."""
    if not path.is_file():
        raise UserError(f"sweep file {path}: no such file; the project's are in configs/sweeps/")
    try:
        sweep = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"sweep file {path} is not YAML that parses ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("studies"), dict) or not sweep["studies"]:
        raise UserError(f"sweep file {path} needs a `studies:` mapping of study names to their grid or space")
    unknown = set(sweep) - SWEEP_KEYS
    if unknown:
        raise UserError(f"sweep file {path}: unknown key {sorted(unknown)[0]!r}; the keys are {', '.join(sorted(SWEEP_KEYS))}")
    fit_args = [str(arg) for arg in sweep.get("fit_args") or []]
    metric, test = str(sweep.get("metric", "Accuracy/val")), bool(sweep.get("test", False))
    cli = str(sweep.get("cli", StudySpec.cli))
    cli_class(cli, f"sweep file {path}")
    if "test" in metric.lower() and not test:
        raise UserError(f"sweep file {path}: metric {metric} needs `test: true`")
    specs = []
    for name, study in sweep["studies"].items():
        where = f"sweep file {path}, study {name}"
        if not isinstance(study, dict) or set(study) - STUDY_KEYS:
            extra = sorted(set(study) - STUDY_KEYS)[0] if isinstance(study, dict) else None
            raise UserError(f"{where}: unknown key {extra!r}; a study has {', '.join(sorted(STUDY_KEYS))}")
        sampler = study.get("sampler", "grid")
        spec = StudySpec(name=str(name), fit_args=fit_args, metric=metric, test=test, cli=cli,
                         choices=study.get("choices") or {}, follow=study.get("follow") or {})
        if sampler == "grid":
            if not isinstance(study.get("grid"), dict) or not study["grid"]:
                raise UserError(f"{where}: a grid study needs `grid:`, a mapping of each flag to its list of values")
            spec.grid = {key: list(values) if isinstance(values, list) else [values] for key, values in study["grid"].items()}
        elif sampler == "tpe":
            if not isinstance(study.get("space"), dict) or not isinstance(study.get("n_trials"), int) or study["n_trials"] < 1:
                raise UserError(f"{where}: a tpe study needs `space:` (flag: {{low, high, log}} or a list) and `n_trials:` (at least 1)")
            spec.space, spec.n_trials = study["space"], study["n_trials"]
        else:
            raise UserError(f"{where}: sampler {sampler!r} is not one of grid, tpe")
        for choice, values in spec.choices.items():
            used = (spec.grid or spec.space or {}).get(choice)
            if used is None or not isinstance(used, list) or set(used) - set(values):
                raise UserError(f"{where}: choices.{choice} must give the flags of every value its grid lists")
        specs.append(spec)
    return specs


def cli_class(name: str, where: str) -> type[CifarCLI]:
    """The command line a sweep file's trials train through: lit_cifar.cli.CifarCLI or a subclass of it."""
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        found = None
    if not (isinstance(found, type) and issubclass(found, CifarCLI)):
        raise UserError(f"{where}: cli {name} is not lit_cifar.cli.CifarCLI or a subclass of it, "
                        "e.g. lit_cifar.zero_shot.ZeroShotCLI")
    return found


def train(cli_type: type[CifarCLI], flags: list[str], test: bool) -> dict[str, float]:
    """fit.py with these flags in this process (then the final weights tested, if asked). What a trial keeps:
    the run's final metrics (the last epoch's, and the test's) and the trained weights' statistics."""
    cli = cli_type(args=["fit", *flags])
    metrics = dict(cli.trainer.callback_metrics)  # the fit's: a test replaces them with its own
    if test:
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        metrics.update(cli.trainer.callback_metrics)
    statistics = weight_statistics(named_weights(cli.model))
    return {key: float(value) for key, value in metrics.items() if key != "step"} | {
        key: float(statistics[key]) for key in KEPT_WEIGHT_STATISTICS}


def storage(url: str, heartbeat_interval: int) -> RDBStorage:
    """An Optuna storage with heartbeats: a trial whose worker died is failed and queued again."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5, and documented
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None  # SQLite: wait for other workers' writes
        for attempt in range(5):
            try:
                return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
            except (sqlalchemy.exc.ArgumentError, ModuleNotFoundError) as err:
                raise UserError(f"--storage {url}: not a database URL Optuna can open ({err}); e.g. "
                                "sqlite:///sweeps.db, or postgresql://user:password@host/db with psycopg2 installed") from None
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
                # Workers started at once on a new database each create its tables, and all but one fail
                # (optuna issue #1092); a moment later the tables are there.
                if attempt == 4:
                    raise
                time.sleep(1 + attempt)


class Worker:
    """Runs the trials of a study that are still to run, beside any other workers on the same storage."""

    def __init__(self, spec: StudySpec, store: RDBStorage, extra_args: list[str], log_name: str, heartbeat_interval: int) -> None:
        self.spec, self.extra_args, self.log_name, self.heartbeat_interval = spec, extra_args, log_name, heartbeat_interval
        self.store = store
        self.cli = cli_class(spec.cli, f"study {spec.name}")
        # The grid's order is fixed (seed 0), so every worker maps trial numbers to the same points.
        sampler = optuna.samplers.GridSampler(spec.grid, seed=0) if spec.grid is not None else optuna.samplers.TPESampler()
        self.study = optuna.create_study(study_name=spec.name, storage=store, sampler=sampler,
                                         direction="maximize", load_if_exists=True)
        stored = self.study.user_attrs.get("definition")
        if stored is None:
            self.study.set_user_attr("definition", spec.definition())
        elif stored != spec.definition():
            raise UserError(f"study {spec.name} in the storage was made from another definition (its grid, space or "
                            "flags changed): rename the study in the sweep file, or give another --storage")

    def run(self) -> None:
        self._retry_failed()
        while True:
            self._fail_dead_trials()
            trials = self.study.get_trials(deepcopy=False)
            if any(t.state == TrialState.WAITING for t in trials) or self._unstarted(trials):
                self.study.optimize(self.objective, n_trials=1)
            elif any(t.state == TrialState.RUNNING for t in trials):  # another worker's, or a dead one's not yet stale
                time.sleep(self.heartbeat_interval)
            else:
                return

    def _fail_dead_trials(self) -> None:
        """Fail the trials of workers that died, each with a copy queued: those whose heartbeat went silent
        (Optuna's check), and those that died before it began (after Optuna's ask, before the objective:
        no heartbeat yet, which Optuna never calls stale)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(self.study)
        grace = timedelta(seconds=2 * self.heartbeat_interval)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "worker" not in trial.user_attrs and datetime.now() - trial.datetime_start > grace:
                # As Optuna's fail_stale_trials does it: through the storage (Study.tell would let the grid
                # sampler stop the study, which only an objective may).
                if self.store.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                    self.store.get_heartbeat_stale_trial_callback()(self.study, self.study.get_trials(deepcopy=False)[trial.number])

    def _unstarted(self, trials: list[FrozenTrial]) -> bool:
        live = [t for t in trials if t.state != TrialState.FAIL]  # a failed trial's copy stands for it
        if self.spec.grid is None:
            return len(live) < self.spec.n_trials
        return len({t.system_attrs.get("grid_id") for t in live}) < self.spec.size

    def _retry_failed(self) -> None:
        """Queue a copy of each failed trial not yet queued again (one whose run raised, or was interrupted)."""
        trials = self.study.get_trials(deepcopy=False)
        retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
        for trial in trials:
            if trial.state == TrialState.FAIL and trial.number not in retried:
                self.store.get_heartbeat_stale_trial_callback()(self.study, trial)  # the storage's own retry: a copy queued

    def objective(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # first: it says the trial has begun
        params = self.spec.suggest(trial)
        duplicate = self._earlier_duplicate(trial)
        if duplicate is not None:  # two workers took the last grid point at once: one runs it
            trial.set_user_attr("duplicate_of", duplicate)
            raise optuna.TrialPruned(f"grid point already taken by trial {duplicate}")
        logger = ["--trainer.logger.init_args.name", f"{self.log_name}/{self.spec.name}",
                  "--trainer.logger.init_args.version", f"trial_{trial.number}"]
        try:
            metrics = train(self.cli, [*self.spec.flags(params), *self.extra_args, *logger], self.spec.test)
        except NonFiniteLossError as err:  # a result of the sweep (λ too strong), not a failure to run it
            trial.set_user_attr("diverged", " ".join(str(err).split()))
            raise optuna.TrialPruned("the training loss diverged") from None
        except KeyboardInterrupt:  # (Lightning turns one during training into SystemExit itself)
            raise SystemExit(130) from None  # the trial stays RUNNING: once stale it is queued again
        if self.spec.metric not in metrics:
            raise UserError(f"metric {self.spec.metric} of the sweep file is not among the run's metrics: "
                            f"{', '.join(sorted(metrics))}")
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        return metrics[self.spec.metric]

    def _earlier_duplicate(self, trial: optuna.Trial) -> int | None:
        trials = self.study.get_trials(deepcopy=False)
        grid_id = next(t for t in trials if t.number == trial.number).system_attrs.get("grid_id")
        if grid_id is None:
            return None
        for other in trials:
            if other.number != trial.number and other.system_attrs.get("grid_id") == grid_id and (
                other.state == TrialState.COMPLETE or (other.state == TrialState.RUNNING and other.number < trial.number)
            ):
                return other.number
        return None
