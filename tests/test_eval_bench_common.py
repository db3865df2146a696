"""bench/common.py: the shared benchmark helpers (owned by the eval helper)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
common = pytest.importorskip("common")


def test_table_render_and_records():
    t = common.Table("case", "ms", title="T")
    t.add("a", 1.23456)
    t.add("long name", float("nan"))
    lines = t.render().splitlines()
    assert lines[0] == "T" and lines[1].startswith("case") and set(lines[2]) <= {"-", " "}
    assert "1.235" in lines[3] and lines[4].rstrip().endswith("nan")
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    assert t.records() == [{"case": "a", "ms": 1.23456}, {"case": "long name", "ms": t.rows[1][1]}]
    with pytest.raises(ValueError):
        t.add("only one")


def test_timeit_and_machine_info(tmp_path):
    calls = []
    r = common.timeit(lambda: calls.append(1), repeat=3, warmup=2, number=4)
    assert len(calls) == 2 + 3 * 4 and r["min_s"] <= r["median_s"] and r["cpu_median_s"] >= 0
    info = common.machine_info()
    assert info["cpu_cores"] >= 1 and info["cpu"] and info["timestamp_utc"].endswith("+00:00")
    assert "cores" in common.describe_machine(info)
    p = common.write_json(tmp_path / "x" / "b.json", {"machine": info, "rows": [{"v": 1.5}]})
    assert json.loads(p.read_text())["rows"][0]["v"] == 1.5
