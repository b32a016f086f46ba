"""Zero-shot learning by direct attribute prediction (DAP: Lampert, Nickisch and Harmeling, "Learning to
detect unseen object classes by between-class attribute transfer", CVPR 2009).

Every class is described by yes/no attributes (``ATTRIBUTES``). The network learns to predict the
attributes of images of the seen classes only; a held-out class's images are then recognised by
which class's attribute description their predicted attributes fit best:

    score(class c | image x) = Σ_k log p(a_k = A[c, k] | x) − log p(a_k = A[c, k])

with p(a_k | x) the network's sigmoid outputs and p(a_k) the share of seen classes that have the
attribute (DAP's prior; Lampert et al., eq. 2, for uniform class priors). Test reports the zero-shot
accuracy (held-out images among the held-out classes), its chance level, the generalized setting
(all ten classes to choose from: accuracy on seen and on held-out images, their harmonic mean), and
per attribute how often it is right on held-out images and what leaving it out costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningArgumentParser
from torch import nn

from lit_cifar.cli import CifarCLI
from lit_cifar.errors import ConfigError
from lit_cifar.module import CIFARClassifier
from lit_cifar.sources import CLASSES

# Each attribute with the classes that have it, and why. Judged for the typical CIFAR-10 photo of the class.
ATTRIBUTES: dict[str, tuple[tuple[str, ...], str]] = {
    "man_made": (("airplane", "automobile", "ship", "truck"), "the four vehicle classes are built; the six animals are not"),
    "wheels": (("airplane", "automobile", "truck"), "cars and trucks stand on wheels, an airplane on its landing gear; a ship has none"),
    "wings": (("airplane", "bird"), "an airplane's and a bird's wings are their most visible shape"),
    "flies": (("airplane", "bird"), "both are often photographed in the sky"),
    "water": (("frog", "ship"), "a ship is on water, a frog lives on or by it"),
    "four_legs": (("cat", "deer", "dog", "frog", "horse"), "four-legged animals; a bird stands on two"),
    "furry": (("cat", "deer", "dog", "horse"), "fur covers the mammals; a bird has feathers, a frog bare skin"),
    "hooves": (("deer", "horse"), "the two hoofed animals"),
    "antlers": (("deer",), "a stag's antlers (does have none, so many deer photos lack them)"),
    "long_neck": (("deer", "horse"), "deer and horses carry the head high on a long neck"),
    "pet": (("cat", "dog"), "kept in homes; photographed indoors or close up"),
    "pointed_ears": (("cat", "deer", "horse"), "upright pointed ears; many dogs' ears hang"),
    "bigger_than_a_car": (("airplane", "ship", "truck"), "the three vehicles larger than a car"),
    "feathers": (("bird",), "only birds have feathers"),
    "bare_skin": (("frog",), "a frog's smooth, hairless skin"),
}


def class_attributes() -> torch.Tensor:
    """The (classes × attributes) table as 0/1, classes in CIFAR-10's label order."""
    return torch.tensor([[float(name in classes) for classes, _ in ATTRIBUTES.values()] for name in CLASSES])


def dap_scores(attribute_logits: torch.Tensor, table: torch.Tensor, prior: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """DAP's log class scores (N × classes) from the network's attribute logits (N × attributes)."""
    p = torch.sigmoid(attribute_logits.float()).clamp(eps, 1 - eps)
    prior = prior.clamp(eps, 1 - eps)
    likelihood = p.log() @ table.T + (1 - p).log() @ (1 - table).T
    return likelihood - (table * prior.log() + (1 - table) * (1 - prior).log()).sum(1)


class AttributeClassifier(CIFARClassifier):
    """SeedCNN predicting ``ATTRIBUTES`` instead of classes, trained with binary cross-entropy on the seen
    classes' attribute vectors, classifying by DAP. Every CIFARClassifier argument applies (the penalty,
    dropout, optimizer, schedule); the network must be seed_cnn and test-time augmentation off.

    Args:
        unseen_classes: The held-out classes, given by ``--data.unseen_classes`` (the CLI links the two).
    """

    def __init__(self, unseen_classes: list[str] | None = None, **kwargs) -> None:
        if kwargs.get("network", "seed_cnn") != "seed_cnn" or kwargs.get("tta", "none") != "none":
            raise ConfigError(
                "zero-shot learning uses --model.network seed_cnn without test-time augmentation: "
                "add --model.network seed_cnn --model.tta none after a config that sets them (fast.yaml sets tta)"
            )
        super().__init__(**kwargs)
        self.network.fc2 = nn.Linear(self.network.fc2.in_features, len(ATTRIBUTES))  # attributes, not classes
        unseen = sorted(CLASSES.index(name) for name in set(unseen_classes or []))
        seen = [label for label in range(len(CLASSES)) if label not in unseen]
        table = class_attributes()
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("prior", table[seen].mean(0), persistent=False)
        self.register_buffer("seen_mask", torch.isin(torch.arange(len(CLASSES)), torch.tensor(seen)), persistent=False)
        self.unseen = unseen
        self.test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def scores(self, attribute_logits: torch.Tensor, seen_only: bool) -> torch.Tensor:
        scores = dap_scores(attribute_logits, self.table, self.prior)
        return scores.masked_fill(~self.seen_mask, -torch.inf) if seen_only else scores

    def attribute_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy against each image's class attributes, averaged per image."""
        return F.binary_cross_entropy_with_logits(logits.float(), self.table[labels], reduction="none").mean(1)

    def objective(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        logits = self(images)
        losses = self.attribute_losses(logits, labels)
        kept = (losses.detach(), self.scores(logits.detach(), seen_only=True).argmax(1), labels)
        weight_penalty = self.penalty()
        if weight_penalty is None:
            return losses.mean(), kept
        return losses.mean() + weight_penalty, (*kept, weight_penalty.detach())

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: nn.ModuleDict) -> None:
        images, labels = batch
        logits = self(images)
        testing = metrics is self.test_metrics  # validation holds seen classes only; test all ten
        scores = self.scores(logits, seen_only=not testing)
        metrics["Loss"].update(self.attribute_losses(logits, labels))
        metrics["Accuracy"].update(scores, labels)
        metrics["Confusion"].update(scores, labels)
        if testing:
            self.test_outputs.append((logits.float(), labels))

    def on_test_epoch_end(self) -> None:
        if self.test_outputs:
            logits, labels = (torch.cat(parts) for parts in zip(*self.test_outputs))
            self.test_outputs.clear()
            for name, value in zero_shot_metrics(logits, labels, self.table, self.prior, self.unseen).items():
                self.log(name, value)
        super().on_test_epoch_end()


def zero_shot_metrics(logits: torch.Tensor, labels: torch.Tensor, table: torch.Tensor, prior: torch.Tensor,
                      unseen: list[int]) -> dict[str, float]:
    """The test split's zero-shot figures (see the module docstring); empty when no class is held out."""
    if not unseen:
        return {}
    unseen_t = torch.tensor(unseen, device=labels.device)
    held_out = torch.isin(labels, unseen_t)
    if not held_out.any():
        return {}
    scores = dap_scores(logits, table, prior)
    among_unseen = scores[held_out][:, unseen_t].argmax(1)
    zsl = (unseen_t[among_unseen] == labels[held_out]).float().mean()
    shares = torch.bincount(labels[held_out], minlength=len(CLASSES))[unseen_t].float() / held_out.sum()
    everything = scores.argmax(1) == labels
    seen_accuracy, unseen_accuracy = everything[~held_out].float().mean(), everything[held_out].float().mean()
    harmonic = 2 * seen_accuracy * unseen_accuracy / (seen_accuracy + unseen_accuracy).clamp(min=1e-12)
    metrics = {
        "ZeroShot/accuracy": zsl, "ZeroShot/chance": shares.max(),  # chance: always guessing the commonest held-out class
        "GeneralizedZeroShot/seen": seen_accuracy, "GeneralizedZeroShot/unseen": unseen_accuracy,
        "GeneralizedZeroShot/harmonic_mean": harmonic,
    }
    predicted = torch.sigmoid(logits[held_out]) > 0.5
    truth = table[labels[held_out]].bool()
    for index, name in enumerate(ATTRIBUTES):
        metrics[f"Attribute/{name}/unseen_accuracy"] = (predicted[:, index] == truth[:, index]).float().mean()
        keep = [k for k in range(len(ATTRIBUTES)) if k != index]
        without = dap_scores(logits[held_out][:, keep], table[:, keep], prior[keep])[:, unseen_t].argmax(1)
        metrics[f"Attribute/{name}/zero_shot_without"] = (unseen_t[without] == labels[held_out]).float().mean()
    return {name: float(value) for name, value in metrics.items()}


class ZeroShotCLI(CifarCLI):
    """fit.py's command line for AttributeClassifier: ``--data.unseen_classes`` also tells the model."""

    DEFAULT_UNSEEN = ["cat", "truck"]

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(args=args, run=run, model_class=AttributeClassifier)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"data.unseen_classes": self.DEFAULT_UNSEEN})
        parser.link_arguments("data.unseen_classes", "model.unseen_classes")


def summary(metrics: dict, unseen: list[int]) -> str:
    """The test's zero-shot figures as a few lines of text."""
    names = " and ".join(CLASSES[label] for label in unseen)
    value = {key: float(metric) for key, metric in metrics.items()}
    lines = [f"held out: {names}",
             f"zero-shot accuracy among them: {value['ZeroShot/accuracy']:.1%} (chance {value['ZeroShot/chance']:.1%})",
             f"all ten classes to choose from: seen {value['GeneralizedZeroShot/seen']:.1%}, held out "
             f"{value['GeneralizedZeroShot/unseen']:.1%}, harmonic mean {value['GeneralizedZeroShot/harmonic_mean']:.1%}",
             "attribute: right on held-out images / zero-shot accuracy without it"]
    for name in ATTRIBUTES:
        lines.append(f"  {name}: {value[f'Attribute/{name}/unseen_accuracy']:.1%} / "
                     f"{value[f'Attribute/{name}/zero_shot_without']:.1%}")
    return "\n".join(lines)
