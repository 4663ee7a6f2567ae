# The README's family x path table is the one the tests run (tests/family_matrix.py), so it cannot drift.
import os

from tests.conftest import ROOT
from tests.family_matrix import PATHS, cells, expectation, render_table
from tests.model_zoo import COMPRESSORS, GENERATORS


def test_readme_table_is_the_tested_table():
    text = open(os.path.join(ROOT, "README.md")).read()
    start, end = "<!-- family-matrix:start -->\n", "\n<!-- family-matrix:end -->"
    assert start in text and end in text, "README.md lost its family-matrix markers"
    shown = text[text.index(start) + len(start):text.index(end)]
    assert shown.strip() == render_table().strip(), "README table is stale: paste `python -m tests.family_matrix`"


def test_every_family_is_in_the_table_with_every_path():
    table = cells()
    assert {g for g, _ in table} == set(GENERATORS)
    assert {c for _, c in table} >= set(COMPRESSORS)
    for cell in table:
        for path in PATHS:
            assert expectation(cell, path) == "ok" or expectation(cell, path).startswith(("refused: ", "runs: "))
