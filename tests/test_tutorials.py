"""The tutorial notebooks: every one executes without error in a fresh kernel,
and the committed copy carries the outputs of its current code, as written
by ``make notebooks`` (``tests/notebooks.py``)."""

import pytest

from tests.notebooks import META_KEY, NOTEBOOKS, code_hash, errors, execute

IDS = [p.stem for p in NOTEBOOKS]


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    nb = execute(nbformat.read(path, as_version=4), cwd=str(tmp_path))
    assert not errors(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_has_current_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    refresh = "re-execute it with `make notebooks` and commit the outputs"
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"not executed in order; {refresh}"
    assert not errors(nb), refresh
    assert any(c.get("outputs") for c in code), f"no outputs; {refresh}"
    recorded = nb.metadata.get(META_KEY, {}).get("code_sha256")
    assert recorded == code_hash(nb), f"outputs older than the code; {refresh}"


def test_there_are_tutorials():
    assert NOTEBOOKS, "tutorials/ holds no notebook"
