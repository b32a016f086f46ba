"""scripts/predict.py, LightningCLI's predict: image files and folders in, the top classes printed or saved."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import trained_checkpoint
from lit_cifar import cpu
from lit_cifar.augment import normalize
from lit_cifar.cli import main
from lit_cifar.module import untrained_classifier
from lit_cifar.predict import read_image
from lit_cifar.sources import CLASSES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """One short run trained with CIFAR-10's own normalisation, which prediction has to take from the checkpoint."""
    return trained_checkpoint(tmp_path_factory.mktemp("predict"))


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder as users have them: sizes, modes and formats of all kinds, a subfolder, and a file that is no image."""
    folder = tmp_path / "photos"
    (folder / "holiday").mkdir(parents=True)
    Image.new("RGBA", (64, 48), (200, 30, 30, 255)).save(folder / "big.png")
    Image.new("L", (20, 20), 90).save(folder / "gray.jpg")
    Image.new("P", (32, 32), 3).save(folder / "holiday" / "anim.gif")
    Image.new("RGB", (500, 300), (10, 120, 200)).save(folder / "holiday" / "sea.webp")
    (folder / "notes.txt").write_text("not an image")
    return folder


def predict(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def expected_probabilities(checkpoint: Path, image: Path) -> torch.Tensor:
    """What the checkpoint's network says about one image on its own: the reference for the batched answers."""
    saved = torch.load(checkpoint, weights_only=True)
    model = untrained_classifier(saved["hyper_parameters"])
    model.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        return model.eval()(normalize(read_image(image)[None], "cifar10")).softmax(1)[0]


def test_a_folder_is_predicted_in_batches_subfolders_and_every_format_included(checkpoint, photos, tmp_path):
    run = predict("--ckpt_path", str(checkpoint), "--data.eval_batch_size", "3", str(photos), str(tmp_path / "gone.jpg"),
                  cwd=tmp_path)
    assert run.returncode == 1  # something was skipped
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines())
    images = ["big.png", "gray.jpg", "holiday/anim.gif", "holiday/sea.webp"]
    assert sorted(lines) == [str(photos / name) for name in images]
    for path, answer in lines.items():
        names = [part.split()[0] for part in answer.split(", ")]
        assert len(names) == 3 and set(names) <= set(CLASSES)
        top = expected_probabilities(checkpoint, Path(path)).topk(3)
        assert names == [CLASSES[i] for i in top.indices]
    assert f"skipped {photos / 'notes.txt'}: not an image PIL can read" in run.stderr
    assert f"skipped {tmp_path / 'gone.jpg'}: no such file or folder" in run.stderr
    assert "4 images predicted, 2 skipped" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "lightning_logs").exists() and not (tmp_path / "config.yaml").exists()  # nothing left behind


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_predictions_are_saved_as_csv_or_json_with_the_top_k_classes(checkpoint, photos, tmp_path, suffix):
    output = tmp_path / f"predictions{suffix}"
    run = predict("--ckpt_path", str(checkpoint), "--prediction.output", str(output), "--prediction.top_k", "5",
                  str(photos / "big.png"), str(photos / "holiday"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and f"wrote 3 predictions to {output}" in run.stderr
    if suffix == ".csv":
        with open(output, newline="") as file:
            rows = list(csv.DictReader(file))
        got = {row["path"]: [float(row[f"probability_{k}"]) for k in range(1, 6)] for row in rows}
        names = {row["path"]: [row[f"class_{k}"] for k in range(1, 6)] for row in rows}
    else:
        rows = json.loads(output.read_text())
        got = {row["path"]: [t["probability"] for t in row["top"]] for row in rows}
        names = {row["path"]: [t["class"] for t in row["top"]] for row in rows}
    assert list(got) == [str(photos / "big.png"), str(photos / "holiday" / "anim.gif"), str(photos / "holiday" / "sea.webp")]
    for path, probabilities in got.items():
        top = expected_probabilities(checkpoint, Path(path)).topk(5)
        assert names[path] == [CLASSES[i] for i in top.indices]
        torch.testing.assert_close(torch.tensor(probabilities), top.values, atol=1e-5, rtol=0)


def test_prediction_needs_no_cifar10(checkpoint, photos, tmp_path):
    empty = tmp_path / "no_data_here"
    run = predict("--ckpt_path", str(checkpoint), "--data.data_dir", str(empty), "--data.download", "false",
                  str(photos / "gray.jpg"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"{photos / 'gray.jpg'}: ") and not empty.exists()


@pytest.mark.parametrize("bf16_units", [True, False], ids=["bf16 units", "no bf16 units"])
def test_prediction_runs_at_the_precision_the_run_trained_with(bf16_units, tmp_path, monkeypatch, capsys):
    trained_checkpoint(tmp_path, "--precision", "bf16-mixed")
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    monkeypatch.setattr(cpu, "has_bf16_units", lambda: bf16_units)  # predicted on a CPU with or without them
    capsys.readouterr()
    cli = main("predict", ["--ckpt_path", "last", str(image)])
    out, err = capsys.readouterr()
    assert cli.trainer.precision == ("bf16-mixed" if bf16_units else "32-true")
    assert ("Evaluating in bf16-mixed, the precision lightning_logs/version_0 trained with" in err) == bf16_units
    assert ("Running in 32-true, not the bf16-mixed asked for" in err) == (not bf16_units)
    assert out.startswith(f"{image}: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the image files or folders to classify"),
        (["--prediction.output", "out.txt", "x.jpg"], "--prediction.output out.txt: give a file ending in .csv or .json"),
        (["--prediction.top_k", "11", "x.jpg"], "--prediction.top_k must be between 1 and 10, got 11"),
    ],
)
def test_what_cannot_be_predicted_is_refused_in_one_line(checkpoint, tmp_path, args, message):
    run = predict("--ckpt_path", str(checkpoint), *args, cwd=tmp_path)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("kind", ["junk", "unsafe"])
def test_predict_refuses_what_is_not_a_safe_checkpoint(kind, tmp_path):
    fake = tmp_path / f"{kind}.ckpt"
    if kind == "junk":
        fake.write_bytes(b"junk")
        message = f"{fake} is not a checkpoint"
    else:  # what a model built in Python with a class as its optimizer saves: loading it needs the class
        torch.save({"state_dict": {}, "hyper_parameters": {"optimizer": torch.optim.Adam}}, fake)
        message = f"{fake} holds objects that are not safe to load"
    run = predict("--ckpt_path", str(fake), str(fake), cwd=tmp_path)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
