"""docs/performance.md and bench/results/performance.json hold the same rows (the JSON is written
from the document by scripts/performance_json.py), and every row is complete."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("performance_json", ROOT / "scripts" / "performance_json.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_json_is_the_documents_rows():
    mod = load_script()
    doc = mod.parse((ROOT / "docs" / "performance.md").read_text(encoding="utf-8"))
    committed = json.loads((ROOT / "bench" / "results" / "performance.json").read_text(encoding="utf-8"))
    assert committed == doc, "bench/results/performance.json is stale: run python scripts/performance_json.py"


def test_every_row_has_a_figure_a_known_machine_and_a_command():
    doc = load_script().parse((ROOT / "docs" / "performance.md").read_text(encoding="utf-8"))
    assert len(doc["rows"]) >= 40
    for r in doc["rows"]:
        assert isinstance(r["value"], float), r["what"]
        assert r["machine"] in doc["machines"], r["what"]
        assert r["command"] and r["date"].startswith("20"), r["what"]


def test_measured_cells_split_into_value_unit_and_note():
    mod = load_script()
    assert mod.measured("**-10 MB from the 10th** (606 MB after 50)") == (-10.0, "MB from the 10th", "606 MB after 50")
    assert mod.measured("**1,236.7 frames/s**") == (1236.7, "frames/s", "")
    assert mod.cells("| a | `x | y` | b |") == ["a", "`x | y`", "b"]
