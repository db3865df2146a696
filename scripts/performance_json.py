"""Write bench/results/performance.json from the tables of docs/performance.md (the document is
edited by hand; the JSON is the same rows as data). ``--check`` exits 1 when the JSON is stale.

Each table row ``| what | target | measured | machine | date | command |`` becomes a record;
``measured`` is ``**VALUE UNIT** (NOTE)``: VALUE the first number in bold, UNIT the rest of the
bold text, NOTE the text after it. The section a row is in names its stage.

    python scripts/performance_json.py            # rewrite the JSON
    python scripts/performance_json.py --check    # exit 1 if it differs from the document
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
OUT = ROOT / "bench" / "results" / "performance.json"
STAGES = {"Rig": "rig", "Fit jobs and hostile input": "fit", "Web app": "web", "Evaluation": "eval",
          "Video renderer and avatar": "video"}
NUMBER = re.compile(r"^(-?\d[\d,]*(?:\.\d+)?)\s*(.*)$", re.S)


def cells(line: str) -> list[str]:
    """The cells of a markdown table row (``|`` inside backticks does not split)."""
    out, cur, code = [], "", False
    for ch in line.strip()[1:-1]:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def measured(cell: str) -> tuple[float | None, str, str]:
    m = re.match(r"^\*\*(.+?)\*\*\s*(.*)$", cell, re.S)
    if not m:
        return None, "", cell
    bold, rest = m.group(1).strip(), m.group(2).strip()
    note = rest[1:-1] if rest.startswith("(") and rest.endswith(")") else rest
    n = NUMBER.match(bold)
    if not n:
        return None, bold, note
    return float(n.group(1).replace(",", "")), n.group(2).strip(), note


def stage_of(section: str, what: str) -> str:
    for key, stage in STAGES.items():
        if section.startswith(key):
            if stage == "video" and "avatar" in what.lower():
                return "avatar"
            return stage
    return "diffusion" if section.startswith("Diffusion") else section.lower()


def parse(text: str) -> dict:
    rows, machines, section, header = [], {}, "", None
    for line in text.splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), None
            continue
        if not line.startswith("|"):
            header = None
            continue
        c = cells(line)
        if header is None:
            header = c
            continue
        if set("".join(c)) <= set("-: "):
            continue
        if header[:2] == ["name", "what"] and len(c) == 2:
            machines[c[0]] = c[1]
        elif header == ["what", "target", "measured", "machine", "date", "command"] and len(c) == 6:
            value, unit, note = measured(c[2])
            rows.append({"stage": stage_of(section, c[0]), "what": c[0], "target": c[1], "value": value,
                         "unit": unit, "note": note, "machine": c[3], "date": c[4], "command": c[5].strip("`")})
    return {"description": "Current headline figures of portraitrig; docs/performance.md shows the same rows "
                           "(this file is written from it by scripts/performance_json.py).",
            "rows": rows, "machines": machines}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the JSON differs from the document")
    a = ap.parse_args()
    data = parse(DOC.read_text(encoding="utf-8"))
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if a.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/performance_json.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"{len(data['rows'])} rows -> {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
