"""The README's error catalogue, row by row: each input a careless user gives ends in exactly its one line and
exit status 2, and leaves no run folder behind. The rows are read from README.md, so the catalogue a newcomer
reads is the one tested."""

import re

import pytest

from conftest import ROOT, tiny_split, write_python_dir
from lit_cifar.cli import main

# Before every row's own flags (which win): a tiny CIFAR-10 and a short run, so a row that is not refused trains.
BASE = ["--data.data_dir", "cifar10", "--data.download", "false", "--data.val_size", "10", "--data.batch_size", "16",
        "--max_epochs", "1", "--trainer.enable_progress_bar", "false"]
ROW = re.compile(r"^\| `((?:fit|test)\.py)(.*?)` \| `(error: .*)` \|$")


def catalogue() -> list[tuple[str, list[str], str]]:
    rows = [ROW.match(line) for line in (ROOT / "README.md").read_text().splitlines()]
    return [(row[1], row[2].split(), row[3]) for row in rows if row]


def test_the_catalogue_has_at_least_twenty_rows():
    assert len(catalogue()) >= 20


@pytest.fixture
def careless_user_folder(tmp_path):
    """What the rows name: a tiny CIFAR-10 in cifar10/, a text file, a YAML file that does not parse, an empty folder."""
    write_python_dir(tmp_path / "cifar10", tiny_split(6, seed=1) + tiny_split(2, seed=2))
    (tmp_path / "notes.txt").write_text("not a folder, not a checkpoint\n")
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize(("script", "args", "expected"), catalogue(), ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_each_careless_input_ends_in_its_one_line(script, args, expected, careless_user_folder, capsys):
    before = sorted(path.name for path in careless_user_folder.iterdir())
    with pytest.raises(SystemExit) as exit_:
        main(script.removesuffix(".py"), [*BASE, *args])
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [expected.replace("$PWD", str(careless_user_folder))]
    assert sorted(path.name for path in careless_user_folder.iterdir()) == before  # no lightning_logs/version_N
