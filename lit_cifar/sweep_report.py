"""A sweep's results as figures and Markdown tables, read back from its Optuna storage.

A sweep file's ``reports:`` say what to draw, each over one or more of its studies:

    reports:
      penalties:                       # written as penalties.png and penalties.md
        studies: [penalties]
        x: model.reg_lambda            # the x axis
        log_x: true
        lines: [model.regularization, data.train_per_class]   # one line per combination
        panels: [Accuracy/val, gap, Sparsity/all, WeightNorm/L2/all]   # gap: Accuracy/train − Accuracy/val
        table: best                    # best: the x with the best first panel per line; grid: every x,
                                       # the first panel; rows: every x, every panel; by_name: see below
      attributes:
        studies: [zero_shot]
        panels: [Attribute/*/unseen_accuracy, Attribute/*/zero_shot_without]
        table: by_name                 # one row per name that * stands for, the panels as columns
        figure: false

Trials that differ in nothing but parameters left out of ``x`` and ``lines`` (seeds) are averaged: the
figure's error bars and the table's ± are their standard deviation. A diverged trial (its loss became
NaN) is left out of the figure and named in the table.
"""

from __future__ import annotations

import math
import statistics
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from lit_cifar.errors import UserError

GAP = "gap"
LABELS = {GAP: "train − val accuracy", "Sparsity/all": "sparsity (share of weights under 1e-3)", "WeightNorm/L2/all": "weight L2 norm",
          "ZeroShot/accuracy": "zero-shot: among the held-out classes", "ZeroShot/chance": "its chance level",
          "GeneralizedZeroShot/seen": "all ten classes: seen images", "GeneralizedZeroShot/unseen": "all ten: held-out images",
          "GeneralizedZeroShot/harmonic_mean": "all ten: harmonic mean"}
PERCENT = ("Accuracy/", GAP, "Sparsity/", "ZeroShot/", "GeneralizedZeroShot/", "Attribute/")


TABLES = ("best", "grid", "rows", "by_name")


@dataclass
class Report:
    name: str
    studies: list[str]
    panels: list[str]
    x: str | None = None
    lines: list[str] = field(default_factory=list)
    log_x: bool = False
    table: str = "best"
    figure: bool = True


def load_reports(sweep: dict, path: Path) -> list[Report]:
    reports = []
    for name, entry in (sweep.get("reports") or {}).items():
        try:
            report = Report(name=str(name), **entry)
        except TypeError as err:
            raise UserError(f"sweep file {path}, report {name}: {err}; a report has studies, panels, x, lines, log_x, "
                            "table, figure") from None
        if report.table not in TABLES:
            raise UserError(f"sweep file {path}, report {name}: table {report.table!r} is not one of {', '.join(TABLES)}")
        if report.x is None and (report.table != "by_name" or report.figure):
            raise UserError(f"sweep file {path}, report {name}: needs `x:`, the parameter its figure and table run along")
        reports.append(report)
    return reports


def trial_rows(storage, study_names: list[str]) -> list[dict]:
    """Each finished trial of the studies as its parameters and kept metrics; ``diverged`` marks a NaN run.
    A study with no such trial yet is refused: the report would be empty."""
    rows = []
    for name in study_names:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError, ValueError) as err:
            raise UserError(f"--storage {storage}: no Optuna storage can be read there ({' '.join(str(err).split())[:160]}); "
                            "give the --storage scripts/sweep.py wrote to") from None
        except KeyError:
            raise UserError(f"study {name} is not in the storage: run scripts/sweep.py with the same sweep file "
                            "and --storage first") from None
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if trial.state == TrialState.PRUNED and "diverged" not in trial.user_attrs:
                continue  # a duplicate grid point, run by another trial
            row = {**trial.params, **trial.user_attrs, "diverged": "diverged" in trial.user_attrs}
            if "Accuracy/train" in row and "Accuracy/val" in row:
                row[GAP] = row["Accuracy/train"] - row["Accuracy/val"]
            rows.append(row)
    if not rows:
        raise UserError(f"studies {', '.join(study_names)} have no finished trial yet: run scripts/sweep.py first")
    return rows


def grouped(rows: list[dict], report: Report) -> dict[tuple, dict]:
    """{line: {x: [rows]}} in sorted order."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        line = tuple(row.get(key) for key in report.lines)
        groups.setdefault(line, {}).setdefault(row.get(report.x), []).append(row)
    return {line: dict(sorted(points.items())) for line, points in sorted(groups.items(), key=lambda item: str(item[0]))}


def summary(rows: list[dict], key: str) -> tuple[float, float, int]:
    """Mean, standard deviation (0 for one run) and count of a metric over the runs that did not diverge."""
    values = [row[key] for row in rows if not row["diverged"] and key in row]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def formatted(key: str, mean: float, spread: float, count: int) -> str:
    if count == 0:
        return "diverged"
    percent = key.startswith(PERCENT)
    value = f"{mean:.1%}" if percent else f"{mean:.3g}"
    if count > 1:
        value += f" ± {spread:.1%}" if percent else f" ± {spread:.2g}"
    return value


def shown(value) -> str:
    """A parameter value in a table: floats to three significant digits (a search draws long ones)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def line_name(report: Report, line: tuple) -> str:
    return ", ".join(f"{key.split('.')[-1]} {value}" for key, value in zip(report.lines, line))


def by_name_table(report: Report, rows: list[dict]) -> str:
    """One row per name the panels' ``*`` stands for, one column per panel, mean ± sd over every run."""
    patterns = [panel.split("*")[-1].strip("/") for panel in report.panels]
    names = sorted({key.split("/")[panel.split("/").index("*")] for panel in report.panels for row in rows
                    for key in row if fnmatch.fnmatchcase(key, panel)})
    header = ["name", *patterns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for name in names:
        cells = [formatted(panel, *summary(rows, panel.replace("*", name))) for panel in report.panels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return f"mean ± sd over {len(rows)} runs:\n\n" + "\n".join(lines) + "\n"


def markdown_table(report: Report, rows: list[dict]) -> str:
    if report.table == "by_name":
        return by_name_table(report, rows)
    groups = grouped(rows, report)
    first = report.panels[0]
    if report.table == "rows":
        header = [*(key.split(".")[-1] for key in report.lines), report.x.split(".")[-1],
                  *(LABELS.get(panel, panel) for panel in report.panels)]
        lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        for line, points in groups.items():
            for x, runs in points.items():
                cells = [formatted(panel, *summary(runs, panel)) for panel in report.panels]
                lines.append("| " + " | ".join([*(shown(value) for value in line), shown(x), *cells]) + " |")
        return "\n".join(lines) + "\n"
    if report.table == "grid":
        xs = sorted({x for points in groups.values() for x in points})
        lines = [f"| {' | '.join(key.split('.')[-1] for key in report.lines)} | " + " | ".join(str(x) for x in xs) + " |",
                 "| " + " | ".join("---" for _ in [*report.lines, *xs]) + " |"]
        for line, points in groups.items():
            cells = [formatted(first, *summary(points[x], first)) if x in points else "–" for x in xs]
            lines.append(f"| {' | '.join(str(value) for value in line)} | " + " | ".join(cells) + " |")
        return f"{LABELS.get(first, first)} by {report.x.split('.')[-1]} (mean ± sd over the runs):\n\n" + "\n".join(lines) + "\n"
    header = [*(key.split(".")[-1] for key in report.lines), f"best {report.x.split('.')[-1]}",
              *(LABELS.get(panel, panel) for panel in report.panels), "diverged at"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for line, points in groups.items():
        scored = {x: summary(runs, first) for x, runs in points.items()}
        finite = {x: score for x, score in scored.items() if score[2]}
        if not finite:
            continue
        best = max(finite, key=lambda x: finite[x][0])
        cells = [formatted(panel, *summary(points[best], panel)) for panel in report.panels]
        diverged = ", ".join(str(x) for x, runs in points.items() if any(row["diverged"] for row in runs)) or "–"
        lines.append("| " + " | ".join([*(shown(value) for value in line), shown(best), *cells, diverged]) + " |")
    return "\n".join(lines) + "\n"


def plot(report: Report, rows: list[dict], out: Path) -> Path:
    """One panel per metric against x, one line per combination of ``lines``, error bars over the rest;
    for an x of names rather than numbers (and no ``lines``), one bar chart with a bar per metric."""
    from matplotlib.figure import Figure

    if not report.lines and any(isinstance(row.get(report.x), str) for row in rows):
        return bar_chart(report, rows, out)

    figure = Figure(figsize=(max(6.4, 4.2 * len(report.panels)), 3.8 if len(report.panels) > 1 else 4.8), layout="constrained")
    axes_row = figure.subplots(1, len(report.panels), squeeze=False)[0]
    groups = grouped(rows, report)
    # Colour by the first line parameter, line style by the second (e.g. penalty and data size).
    colours = {value: f"C{i % 10}" for i, value in enumerate(dict.fromkeys(line[0] for line in groups))} if report.lines else {}
    styles = dict(zip(dict.fromkeys(line[1] for line in groups), ("-", "--", ":", "-."))) if len(report.lines) > 1 else {}
    for line, points in groups.items():
        colour, style = colours.get(line[0] if line else None, "C0"), styles.get(line[1] if len(line) > 1 else None, "-")
        for axes, panel in zip(axes_row, report.panels):
            kept = [(x, summary(runs, panel)) for x, runs in points.items()]
            kept = [(x, mean, spread) for x, (mean, spread, count) in kept if count]
            if not kept:
                continue
            xs, means, spreads = zip(*kept)
            axes.errorbar(xs, means, yerr=spreads if any(spreads) else None, marker="o", markersize=3, capsize=2,
                          color=colour, linestyle=style, label=line_name(report, line))
    for axes, panel in zip(axes_row, report.panels):
        axes.set(xlabel=report.x.split(".")[-1], ylabel=LABELS.get(panel, panel), title=LABELS.get(panel, panel))
        if report.log_x:
            axes.set_xscale("log")
        axes.grid(alpha=0.3)
    if report.lines:
        axes_row[0].legend(fontsize="x-small")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out


def bar_chart(report: Report, rows: list[dict], out: Path) -> Path:
    """Each x (a name) as a group of bars, one per panel's metric, error bars over the runs."""
    from matplotlib.figure import Figure

    (points,) = grouped(rows, report).values()
    figure = Figure(figsize=(max(6.4, 1.1 * len(points) * len(report.panels) ** 0.5), 4.2), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(report.panels)
    for index, panel in enumerate(report.panels):
        scores = [summary(runs, panel) for runs in points.values()]
        positions = [x + (index - (len(report.panels) - 1) / 2) * width for x in range(len(points))]
        axes.bar(positions, [mean for mean, _, _ in scores], width, yerr=[spread for _, spread, _ in scores] if
                 any(spread for _, spread, _ in scores) else None, label=LABELS.get(panel, panel), color=f"C{index % 10}")
    axes.set_xticks(range(len(points)), [str(x) for x in points])
    axes.set(xlabel=report.x.split(".")[-1])
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize="x-small")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out
