"""Figures the paper and the thesis report on UTKFace, each with its protocol.

A report prints them beside its own numbers, marked with their protocol, so that
nobody compares a random-split figure with a CORAL-protocol one. Only figures read
from the sources themselves are listed; a missing value is ``None``, not a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Protocol names used in reports.
RANDOM = "random split"
CORAL = "CORAL protocol (ages 21-60, published test list)"


@dataclass(frozen=True)
class SourceFigure:
    source: str
    model: str
    protocol: str
    #: task -> metric -> value (accuracies as fractions, MAE in years).
    metrics: dict[str, dict[str, float]]
    note: str = ""


#: Paper Table II (accuracies; the age column is "accuracy with age group", bins not
#: stated in the text we read) and the age MAE of its proposed model. The single-task
#: race figure is read by position from a flattened copy of the table.
UTKFACE: list[SourceFigure] = [
    SourceFigure("paper (Yuan et al. 2024), Table II-III", "proposed (ordinal + uncertainty, 224 px, 80 epochs)", RANDOM,
                 {"age": {"mae": 5.323, "group_accuracy": 0.6474}, "gender": {"accuracy": 0.9091},
                  "race": {"accuracy": 0.7998}},
                 "the paper's own random split of UTKFace; its age groups may differ from this report's"),
    SourceFigure("paper (Yuan et al. 2024), Table II", "single-task networks", RANDOM,
                 {"age": {"group_accuracy": 0.6017}, "gender": {"accuracy": 0.9009}, "race": {"accuracy": 0.7623}},
                 "one network per attribute"),
    SourceFigure("thesis (Sundriyal 2020)", "multi-task, pretrained face backbone, Early Freeze", CORAL,
                 {"age": {"mae": 4.68}}, "age as normalised regression"),
]


def protocol_of(config: dict[str, Any]) -> str:
    """The protocol a run's ``config.yaml`` trained and tested under."""
    data = config.get("data") or {}
    if data.get("split") == "coral":
        # data.limit keeps evenly spaced faces of every split: the published test list is cut too,
        # and a figure on part of it is not the protocol's
        return CORAL if not data.get("limit") else \
            f"CORAL split, subset (data.limit {data['limit']}; not the whole test list)"
    if data.get("split") == "random":
        extra = []
        if data.get("age_range"):
            lo, hi = data["age_range"]
            extra.append(f"ages {lo:g}-{hi:g}")
        if data.get("limit"):
            extra.append(f"data.limit {data['limit']}")
        return RANDOM + (f" ({', '.join(extra)})" if extra else "")
    return str(data.get("split", "?"))


def figures_for(dataset: str) -> list[SourceFigure]:
    return UTKFACE if dataset == "utkface" else []
