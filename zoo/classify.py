"""What every image classifier shares: a trainer that steps one optimizer on a loss
over the model's class scores, validation accuracy and loss, per-class accuracy and
the confusion matrix (`report`, shown by `zoo evaluate`), and a confusion-matrix PNG
written next to metrics.jsonl when a run ends. Part of the public contract: a plugin
subclasses `ClassifierTrainer` and overrides what its reference does differently
(the multiclass SVM's hinge loss, an L2 penalty, a model without an optimizer).
"""

from __future__ import annotations

from typing import Any

from zoo.trainer import Trainer


class ClassifierTrainer(Trainer):
    """`model(image)` -> class scores (N, classes); batches hold `image` and `label`."""

    def configure_optimizers(self) -> Any:
        from zoo.optim import optimization

        return optimization(self.config, self.model.parameters(), self.plan)

    def loss(self, scores: Any, labels: Any) -> Any:
        """The training loss (default: softmax cross-entropy)."""
        import torch.nn.functional as F

        return F.cross_entropy(scores, labels)

    def penalty(self) -> Any:
        """A regulariser added to the loss (default: none)."""
        return 0.0

    def train_step(self, batch: dict[str, Any], optimizers: dict[str, Any], progress: Any) -> dict[str, Any]:
        scores = self.model(batch["image"])
        data_loss = self.loss(scores, batch["label"])
        loss = data_loss + self.penalty()
        (opt,) = optimizers.values()
        opt.zero_grad(set_to_none=True)
        self.backward(loss)
        self.step(opt)
        return {"loss": loss.detach(), "data_loss": data_loss.detach()}

    def predictions(self, batches: Any) -> tuple[Any, Any, Any]:
        """(scores, predicted classes, labels) over all validation batches."""
        import torch

        scores, labels = [], []
        for batch in batches:
            scores.append(self.model(batch["image"]).float())
            labels.append(batch["label"])
        s = torch.cat(scores)
        return s, s.argmax(1), torch.cat(labels)

    def evaluate(self, batches: Any) -> dict[str, float]:
        import torch.nn.functional as F

        scores, predicted, labels = self.predictions(batches)
        return {
            "val_accuracy": float((predicted == labels).float().mean()),
            "val_loss": float(F.cross_entropy(scores, labels)) if scores.shape[1] > 1 else 0.0,
        }

    def report(self, batches: Any) -> dict[str, Any]:
        _, predicted, labels = self.predictions(batches)
        classes = self.data_info.num_classes or int(max(int(predicted.max()), int(labels.max())) + 1)
        return confusion_report(predicted, labels, classes, self.data_info.class_names)

    def end_of_run(self, batches: Any) -> dict[str, Any]:
        report = self.report(batches)
        return {"confusion.png": confusion_image(report), "report.json": report}


def confusion_report(predicted: Any, labels: Any, classes: int, names: Any = None) -> dict[str, Any]:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns:
    predicted class) as plain lists."""
    import torch

    matrix = torch.zeros(classes, classes, dtype=torch.int64)
    matrix.index_put_((labels.cpu(), predicted.cpu()), torch.ones_like(labels.cpu()), accumulate=True)
    totals = matrix.sum(1)
    per_class = [float(matrix[c, c]) / float(totals[c]) if totals[c] else None for c in range(classes)]
    return {
        "accuracy": float(matrix.diag().sum()) / max(1, int(matrix.sum())),
        "samples": int(matrix.sum()),
        "class_names": list(names) if names else [str(c) for c in range(classes)],
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def confusion_image(report: dict[str, Any], cell: int = 28) -> Any:
    """The confusion matrix as an image (3, H, W) in [0, 1]: each cell shaded by the share
    of its true class, with the count written in it and the class names along the axes."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    matrix = np.asarray(report["confusion_matrix"], dtype=np.float64)
    names = [str(n)[:8] for n in report["class_names"]]
    n = len(matrix)
    margin = 8 + 6 * max(len(s) for s in names)
    image = Image.new("RGB", (margin + n * cell + 4, margin + n * cell + 4), "white")
    draw = ImageDraw.Draw(image)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    for r in range(n):
        draw.text((4, margin + r * cell + cell // 3), names[r], fill="black")
        draw.text((margin + r * cell + 2, margin // 3), names[r], fill="black")
        for c in range(n):
            shade = int(255 * (1 - shares[r, c]))
            colour = (shade, shade, 255) if r == c else (255, shade, shade)
            box = (margin + c * cell, margin + r * cell, margin + (c + 1) * cell - 1, margin + (r + 1) * cell - 1)
            draw.rectangle(box, fill=colour, outline=(200, 200, 200))
            if matrix[r, c]:
                draw.text((box[0] + 3, box[1] + cell // 3), str(int(matrix[r, c])), fill="black" if shares[r, c] < 0.6 else "white")
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
