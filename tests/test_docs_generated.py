"""The documents' generated tables match the committed results they name (``results/``)."""

import pathlib

import pytest

from hac_jax.report.generated import check_file

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("document", ["RESULTS.md", "docs/SWEEP.md", "BENCHMARKS.md"])
def test_document_tables_regenerate_from_results(document):
    result, diff = check_file(ROOT / document)
    assert result.blocks > 0, f"{document} has no generated tables"
    assert not diff, f"{document} differs from its results; run python -m hac_jax.report render"
