"""The Colab notebooks: each runs top to bottom on smoke settings, and git holds them stripped.

Executed with nbclient in a fresh kernel from `notebooks/` (as Jupyter would), with
DSPARK_NOTEBOOK_SMOKE=1, which every notebook reads to pick its small settings. Any cell error
fails the test with the cell's traceback.
"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_are_there():
  names = [p.stem for p in NOTEBOOKS]
  assert names == [
    "01_quickstart",
    "02_train_a_drafter",
    "03_evaluate_and_calibrate",
    "04_scheduling",
  ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_carry_no_outputs(path):
  """Outputs stay out of git (no stale numbers, small diffs): clear them before committing
  (`jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`)."""
  book = json.loads(path.read_text())
  for i, cell in enumerate(book["cells"]):
    if cell["cell_type"] == "code":
      assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
        f"{path.name} cell {i} has outputs"
      )


# The quickstart runs in the default suite; the other three (each a minute or two of training,
# evaluation or scheduling sweeps that the unit tests cover piece by piece) in the extended tier.
RUN_CASES = [
  pytest.param(p, marks=() if p.stem.startswith("01_") else pytest.mark.extended) for p in NOTEBOOKS
]


@pytest.mark.real_model
@pytest.mark.parametrize("path", RUN_CASES, ids=lambda p: p.stem)
def test_notebook_runs_on_smoke_settings(path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("DSPARK_NOTEBOOK_SMOKE", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  book = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
    book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
  )
  client.execute()  # raises CellExecutionError, with the cell's traceback, on any error
