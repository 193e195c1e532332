"""Reports of unlearning experiments: tables, figures and generated document blocks from
``results.json`` files.

* :mod:`~hac_jax.report.results`: the results file's schema; writes and reads it.
* :mod:`~hac_jax.report.tables`: runs aggregated over seeds; the mean ± std tables and the
  tables derived from them (targets, differences to a reference row, distances to Retrain).
* :mod:`~hac_jax.report.plots`: alignment matrices, distances to the origin, FA/RA vs k.
* :mod:`~hac_jax.report.styles`: how each model is shown (order, line style), as data.
* :mod:`~hac_jax.report.document`: ``report.md``, ``report.json`` and the figures of a set of
  results files.
* :mod:`~hac_jax.report.generated`: the tables of markdown documents between
  ``<!-- generated: SPEC -->`` markers, rendered and checked against the results.
* :mod:`~hac_jax.report.cli`: ``python -m hac_jax.report`` (report, ``render``, ``check``).
"""

from hac_jax.eval.names import is_fraction
from hac_jax.report.cli import main
from hac_jax.report.document import write_report
from hac_jax.report.generated import check_file, render_file
from hac_jax.report.plots import plot_accuracy_vs_k, plot_alignment_matrices, plot_norm_histograms
from hac_jax.report.results import (
    load_results,
    make_results,
    make_run,
    read_results,
    write_results,
)
from hac_jax.report.tables import (
    DEFAULT_COLUMNS,
    HIERARCHY_COLUMNS,
    accuracy_by_k,
    aggregate,
    markdown_tables,
    sweep_table,
)

__all__ = [
    "DEFAULT_COLUMNS",
    "HIERARCHY_COLUMNS",
    "accuracy_by_k",
    "aggregate",
    "check_file",
    "is_fraction",
    "load_results",
    "main",
    "make_results",
    "make_run",
    "markdown_tables",
    "plot_accuracy_vs_k",
    "plot_alignment_matrices",
    "plot_norm_histograms",
    "read_results",
    "render_file",
    "sweep_table",
    "write_report",
    "write_results",
]
