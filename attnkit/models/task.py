"""The label set shared by every fine-tuning head's config (BERT-family and XLNet heads)."""

from __future__ import annotations

from dataclasses import dataclass

from attnkit.config import Config, check


@dataclass(frozen=True, kw_only=True)
class LabelledTaskConfig(Config):
    """``num_labels`` named ``labels`` (empty: unnamed); ``classifier_dropout=None`` uses the encoder's dropout.

    Subclasses add ``encoder``, the config of the encoder the head sits on.
    """

    num_labels: int = 2
    labels: tuple[str, ...] = ()
    classifier_dropout: float | None = None

    def validate(self) -> None:
        check(self.num_labels > 0, "num_labels", self.num_labels, "must be positive")
        check(not self.labels or len(self.labels) == self.num_labels, "labels", self.labels, f"must name num_labels={self.num_labels} labels")
        check(len(set(self.labels)) == len(self.labels), "labels", self.labels, "must be distinct (a label named twice cannot be told apart)")
        d = self.classifier_dropout
        check(d is None or 0.0 <= d < 1.0, "classifier_dropout", d, "must be in [0, 1) or null")

    @property
    def head_dropout(self) -> float:
        return self.classifier_dropout if self.classifier_dropout is not None else self.encoder.dropout  # type: ignore[attr-defined]
