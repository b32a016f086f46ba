"""Zero-shot learning by attributes: the table, DAP's scores and the test's figures against hand computations,
and scripts/zero_shot.py run as a user runs it."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from lit_cifar.sources import CLASSES
from lit_cifar.zero_shot import ATTRIBUTES, AttributeClassifier, class_attributes, dap_scores, zero_shot_metrics


def test_attribute_table_describes_every_class_apart_with_reasons():
    table = class_attributes()
    assert table.shape == (len(CLASSES), len(ATTRIBUTES))
    named = {name for classes, _ in ATTRIBUTES.values() for name in classes}
    assert named <= set(CLASSES), named - set(CLASSES)  # a misspelt class would silently have no attribute
    assert len({tuple(row.tolist()) for row in table}) == len(CLASSES)  # no two classes look alike
    assert (table.sum(0) > 0).all() and (table.sum(0) < len(CLASSES)).all()
    assert all(reason.strip() for _, reason in ATTRIBUTES.values())


def test_dap_scores_match_a_hand_computation():
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    prior = torch.tensor([0.5, 0.25])
    logits = torch.logit(torch.tensor([[0.9, 0.2]]))
    # class c: Σ_k log p(a_k = A[c,k] | x) − log p(a_k = A[c,k])
    expected = torch.tensor([[
        (torch.tensor(0.9).log() - torch.tensor(0.5).log()) + (torch.tensor(0.8).log() - torch.tensor(0.75).log()),
        (torch.tensor(0.1).log() - torch.tensor(0.5).log()) + (torch.tensor(0.2).log() - torch.tensor(0.25).log()),
        (torch.tensor(0.9).log() - torch.tensor(0.5).log()) + (torch.tensor(0.2).log() - torch.tensor(0.25).log()),
    ]])
    assert torch.allclose(dap_scores(logits, table, prior), expected, atol=1e-5)


def test_zero_shot_figures_match_a_hand_count_and_chance_comes_from_the_labels():
    table = class_attributes()
    cat, truck, dog = CLASSES.index("cat"), CLASSES.index("truck"), CLASSES.index("dog")
    labels = torch.tensor([cat, cat, cat, truck, dog, dog])
    # Logits that say "exactly this class's attributes" (±6), for: cat, cat, truck (wrong), truck, dog, cat (wrong).
    said = torch.tensor([cat, cat, truck, truck, dog, cat])
    logits = (table[said] * 2 - 1) * 6
    prior = table[[i for i in range(len(CLASSES)) if i not in (cat, truck)]].mean(0)
    metrics = zero_shot_metrics(logits, labels, table, prior, [cat, truck])
    assert metrics["ZeroShot/accuracy"] == pytest.approx(3 / 4)
    assert metrics["ZeroShot/chance"] == pytest.approx(3 / 4)  # always "cat": 3 of the 4 held-out images
    assert metrics["GeneralizedZeroShot/unseen"] == pytest.approx(3 / 4)
    assert metrics["GeneralizedZeroShot/seen"] == pytest.approx(1 / 2)
    assert metrics["GeneralizedZeroShot/harmonic_mean"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    # man_made is right on 3 of 4 (the cat called a truck is not), and the pair is still told apart without it.
    assert metrics["Attribute/man_made/unseen_accuracy"] == pytest.approx(3 / 4)
    assert metrics["Attribute/man_made/zero_shot_without"] == pytest.approx(3 / 4)
    assert zero_shot_metrics(logits, labels, table, prior, []) == {}


def test_leaving_out_the_attribute_that_tells_the_pair_apart_costs_the_result():
    table = class_attributes()
    cat, truck = CLASSES.index("cat"), CLASSES.index("truck")
    labels = torch.tensor([cat, cat, truck, truck])
    logits = torch.zeros(4, len(ATTRIBUTES))  # p = 0.5: no attribute says anything ...
    man_made = list(ATTRIBUTES).index("man_made")
    logits[:, man_made] = torch.tensor([-6.0, -6.0, 6.0, 6.0])  # ... but whether it is man-made
    prior = table[[i for i in range(len(CLASSES)) if i not in (cat, truck)]].mean(0)
    metrics = zero_shot_metrics(logits, labels, table, prior, [cat, truck])
    assert metrics["ZeroShot/accuracy"] == 1.0
    assert metrics["Attribute/man_made/zero_shot_without"] == 0.5  # one class for all four: the labels' half
    assert metrics["Attribute/furry/zero_shot_without"] == 1.0


def test_the_network_predicts_attributes_and_refuses_what_it_cannot_do():
    model = AttributeClassifier(unseen_classes=["cat", "truck"])
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, len(ATTRIBUTES))
    seen = [i for i, name in enumerate(CLASSES) if name not in ("cat", "truck")]
    assert torch.equal(model.prior, class_attributes()[seen].mean(0))  # DAP's prior: the seen classes' share
    with pytest.raises(ValueError, match="zero-shot learning uses --model.network seed_cnn"):
        AttributeClassifier(network="airbench")


def zero_shot(data_dir, cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "zero_shot.py"), "--data.data_dir", str(data_dir), "--data.download", "false",
         "--data.val_size", "10", "--data.batch_size", "16", "--trainer.enable_progress_bar", "false", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def test_zero_shot_script_trains_on_seen_classes_reports_and_resumes(learnable_data_dir, tmp_path):
    run = zero_shot(learnable_data_dir, tmp_path, "--max_epochs", "2", "--data.unseen_classes", "[deer,ship]")
    assert run.returncode == 0, run.stderr
    assert "held out: deer and ship" in run.stdout
    assert "zero-shot accuracy among them:" in run.stdout and "(chance 50.0%)" in run.stdout
    hparams = (tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text()
    assert "unseen_classes:\n- deer\n- ship" in hparams  # the model got the data module's held-out classes
    resumed = zero_shot(learnable_data_dir, tmp_path, "--ckpt_path", "last", "--max_epochs", "3")
    assert resumed.returncode == 0, resumed.stderr  # its checkpoint is checked against the attribute network
    assert "Resuming from lightning_logs/version_0/checkpoints/last.ckpt" in resumed.stderr
    assert "held out: deer and ship" in resumed.stdout  # the held-out classes come from the run's own config


def test_the_readme_shows_the_attribute_table_of_the_code():
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in ATTRIBUTES:
            rows[cells[0]] = (tuple(name for name, mark in zip(CLASSES, cells[1:11]) if mark == "✓"), cells[11])
    assert rows == {name: (tuple(sorted(classes, key=CLASSES.index)), why) for name, (classes, why) in ATTRIBUTES.items()}
