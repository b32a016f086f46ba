"""scripts/export.py: a checkpoint as ONNX, TorchScript or a torch.export program, checked against the project's
own predictions on real-format image files, ONNX with ONNX Runtime."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import tiny_split, write_python_dir
from lit_cifar import export as export_module
from lit_cifar.augment import normalize
from lit_cifar.cli import main
from lit_cifar.errors import UserError
from lit_cifar.export import accuracy_of, export, exportable, load_exported
from lit_cifar.module import untrained_classifier
from lit_cifar.predict import read_image
from lit_cifar.sources import load

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {"onnx": 1e-4, "torchscript": 1e-5, "exported_program": 1e-5}  # ONNX Runtime orders the sums its own way


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of each network, trained briefly with CIFAR-10's normalisation and test-time augmentation:
    both must come from the checkpoint into the exported graph."""
    root = tmp_path_factory.mktemp("export")
    data_dir = write_python_dir(root / "data", tiny_split(6, seed=1) + tiny_split(2, seed=2))
    common = ["--data.data_dir", str(data_dir), "--data.val_size", "10", "--data.batch_size", "16", "--data.download", "false",
              "--trainer.enable_progress_bar", "false"]
    recipes = {
        "seed_cnn": ["--max_epochs", "1", "--data.normalization", "cifar10", "--model.tta", "flip"],
        "airbench": ["--config", str(ROOT / "configs" / "speedrun.yaml"), "--max_epochs", "1", "--model.tta", "flip_translate"],
    }
    checkpoints = {}
    with pytest.MonkeyPatch.context() as patch:
        for network, recipe in recipes.items():
            patch.chdir(root)
            main("fit", [*recipe, *common, "--trainer.default_root_dir", network])
            checkpoints[network] = root / network / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoints["data"] = data_dir
    return checkpoints


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    """Files as users have them, read as predict.py reads them: the exported graph starts from those uint8 images."""
    folder = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(3)
    files = []
    for i, (size, suffix) in enumerate([((32, 32), ".png"), ((64, 40), ".jpg"), ((32, 32), ".webp"), ((20, 20), ".png"),
                                        ((32, 32), ".jpg"), ((48, 48), ".bmp"), ((32, 32), ".png")]):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=generator).numpy()
        files.append(folder / f"{i}{suffix}")
        Image.fromarray(pixels).save(files[-1])
    return files


def project_logits(checkpoint: Path, images: torch.Tensor) -> torch.Tensor:
    """The reference: the checkpoint's model as the project runs it, normalisation (cifar10) and tta included."""
    saved = torch.load(checkpoint, weights_only=True)
    model = untrained_classifier(saved["hyper_parameters"]).eval()
    model.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        return model.predict_logits(normalize(images, "cifar10")).float()


@pytest.mark.parametrize("format", ["onnx", "torchscript", "exported_program"])
@pytest.mark.parametrize("network", ["seed_cnn", "airbench"])
def test_an_exported_file_gives_the_projects_logits_for_image_files(runs, image_files, tmp_path, network, format):
    images = torch.stack([read_image(path) for path in image_files])  # uint8, N×3×32×32
    expected = project_logits(runs[network], images)
    target = tmp_path / f"model{export_module.SUFFIXES[format]}"
    export(exportable(runs[network]), target, format)
    exported = load_exported(target, format)
    for batch in (images, images[:1]):  # not the traced batch size of 2
        torch.testing.assert_close(exported(batch), expected[:len(batch)], rtol=0, atol=TOLERANCE[format])


def test_float_input_and_tta_chosen_at_export(runs, image_files, tmp_path):
    images = torch.stack([read_image(path) for path in image_files])
    target = tmp_path / "model.onnx"
    export(exportable(runs["airbench"], tta="none", input_type="float"), target, "onnx")
    saved = torch.load(runs["airbench"], weights_only=True)
    model = untrained_classifier({**saved["hyper_parameters"], "tta": "none"}).eval()
    model.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        expected = model(normalize(images, "cifar10"))
    torch.testing.assert_close(load_exported(target, "onnx")(images.float() / 255), expected, rtol=0, atol=TOLERANCE["onnx"])


def test_export_script_writes_beside_the_checkpoint_and_its_test_accuracy_is_the_checkpoints(runs):
    checkpoint = runs["seed_cnn"]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), "--ckpt_path", str(checkpoint),
                             "--format", "onnx", "--test_data", str(runs["data"])], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert checkpoint.with_suffix(".onnx").is_file()
    assert "ONNX Runtime's logits equal PyTorch's within" in result.stdout
    data = load(runs["data"])
    expected = accuracy_of(lambda images: project_logits(checkpoint, images), "uint8", data.test_images, data.test_labels)
    assert f"Test accuracy of {checkpoint.with_suffix('.onnx')} on {runs['data']}: {expected:.2%} (20 images)" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--ckpt_path", "missing.ckpt", "--format", "onnx"], "error: --ckpt_path missing.ckpt: no such file"),
    (["--ckpt_path", "last", "--format", "onnx"], "error: --ckpt_path last: no earlier run under lightning_logs/"),
    (["--ckpt_path", "CKPT", "--format", "torchscript", "--output", "CKPT"], "is the checkpoint itself: give another file"),
])
def test_export_script_refuses_in_one_line(runs, tmp_path, args, message):
    args = [str(runs["seed_cnn"]) if arg == "CKPT" else arg for arg in args]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_missing_onnx_packages_are_named_with_the_install_command(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "_importable", lambda name: name != "onnxruntime")
    with pytest.raises(UserError, match=r"--format onnx needs onnxruntime, not installed here: pip install -e '\.\[export\]'"):
        export(exportable(runs["seed_cnn"]), tmp_path / "model.onnx", "onnx")


def test_a_failed_export_leaves_an_earlier_file_as_it_was(runs, tmp_path, monkeypatch):
    target = tmp_path / "model.pt2"
    target.write_bytes(b"an earlier export")

    def fails(program, file, **kwargs):
        Path(file).write_bytes(b"half a file")
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(torch.export, "save", fails)
    with pytest.raises(RuntimeError, match="killed mid-export"):
        export(exportable(runs["seed_cnn"]), target, "exported_program")
    assert target.read_bytes() == b"an earlier export"
    assert [path.name for path in tmp_path.iterdir()] == ["model.pt2"]  # no temporary file left
