"""The names of everything an audit measures, what each means, and how it is shown.

One place for the vocabulary shared by the audit (:mod:`hac_jax.eval.audit`), the results files
and the report (:mod:`hac_jax.report`): metric keys, array keys, the glossary of report columns,
and which metrics are fractions (shown in percent).
"""

from __future__ import annotations

__all__ = [
    "ARRAY_KEYS",
    "DESTINATIONS",
    "GLOSSARY",
    "HIERARCHY_METRICS",
    "MERU_ARRAY_KEYS",
    "METRIC_KEYS",
    "PARTS",
    "RETRIEVAL_KS",
    "is_fraction",
]

PARTS = ("forget", "retain")
RETRIEVAL_KS = (1, 5)
DESTINATIONS = ("own_class", "sibling", "parent", "root", "other")
"""Where a forgotten image's new top-1 concept lies (:func:`hac_jax.eval.metrics.
forgotten_destinations`)."""

METRIC_KEYS: tuple[str, ...] = (
    "FA",
    "UA",
    "RA",
    "TA",
    *(f"ret_{d}_R@{k}" for d in ("i2t", "t2i") for k in RETRIEVAL_KS),
    "mia_forget_nonmember",
    "mia_fit_balanced_acc",
    *(f"align_{m}_{p}" for p in PARTS for m in ("matched", "mismatched", "gap")),
    *(f"dist_origin_{m}_{p}" for m in ("image", "text") for p in PARTS),
    *(f"cone_{c}_{p}" for c in ("own", "parent") for p in PARTS),
    *(f"dest_{d}" for d in DESTINATIONS),
)
"""Every key of :attr:`hac_jax.eval.audit.ModelAudit.metrics`, in order."""

HIERARCHY_METRICS: tuple[str, ...] = tuple(
    k for k in METRIC_KEYS if k.startswith(("dist_origin_", "cone_"))
)
"""Metrics defined only where the geometry has entailment cones (on the sphere every norm is 1
and there are no cones): NaN elsewhere."""

ARRAY_KEYS: tuple[str, ...] = (
    "alignment_matrix",
    "is_forget",
    "labels",
    "dest_top1_count",
    "concept_names",
    "forget_train_score",
    "forget_train_rank",
)
"""Keys of :attr:`hac_jax.eval.audit.ModelAudit.arrays` on both geometries."""

MERU_ARRAY_KEYS: tuple[str, ...] = ("dist_origin_image", "dist_origin_text")
"""Extra array keys where the geometry has cones (the hyperboloid)."""

_FRACTION_NAMES = frozenset({"FA", "UA", "RA", "TA"})
_FRACTION_PREFIXES = ("ret_", "mia_", "cone_", "dest_")
# mia_threshold is a similarity value (a negative distance on MERU), not a share of samples.
_RAW_EXCEPTIONS = frozenset({"mia_threshold"})


def is_fraction(metric: str) -> bool:
    """Whether ``metric`` is a share in [0, 1] (shown in percent): accuracies, retrieval,
    membership, cone and destination rates."""
    if metric in _RAW_EXCEPTIONS:
        return False
    return metric in _FRACTION_NAMES or metric.startswith(_FRACTION_PREFIXES)


GLOSSARY: dict[str, str] = {
    "FA": "forget accuracy: zero-shot top-1 on test images of the forgotten concepts "
    "(lower = more forgotten; the target is Retrain's FA)",
    "UA": "the same on the forget *training* images",
    "RA": "retain accuracy: zero-shot top-1 on test images of the retained concepts",
    "TA": "zero-shot top-1 on all test images",
    "mia_forget_nonmember": "share of forget training pairs a membership-inference threshold "
    "(fit on retain-train vs test) judges non-members (target: Retrain's value)",
    "align_gap_forget": "mean sim of matched minus mismatched image-caption pairs, forget test "
    "pairs (raw similarity units)",
    "align_gap_retain": "the same on retain test pairs",
    "dist_origin_image_forget": "mean hyperbolic distance to the origin of forget test images "
    "(MERU; raw units)",
    "cone_own_forget": "share of forget test images inside their caption's entailment cone",
    "cone_parent_forget": "share of forget test images inside their parent concept's cone",
    "dest_sibling": "share of forget test images whose new top-1 concept is a sibling class",
    "steps": "unlearning optimizer steps (mean over seeds)",
    "seconds": "unlearning wall time in seconds (mean over seeds)",
    "compute": "images processed during unlearning as a percentage of the same model's Retrain "
    "row for that forget set",
    "n": "number of runs (seeds) aggregated",
}
"""What each report column means (columns without an entry are described by their unit)."""
