"""`portraitrig heldout`: generate (held-out edits into npz parts), parts joined, score, sheet."""
import json

import numpy as np
import pytest
import torch

from portraitrig.methods.diffusionrig.config import preset
from portraitrig.neural.cache import build_cache
from portraitrig.methods.diffusionrig.model import DiffusionRigModel
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from portraitrig.errors import InputError



class _Heldout:
    """The module, with main() taking the subcommand's arguments as `portraitrig heldout` does."""

    from portraitrig.eval import heldout as _m

    EDITS = _m.EDITS
    _load_runs = staticmethod(_m._load_runs)

    @classmethod
    def main(cls, argv):
        return cls._m.main(["heldout", *argv])


def _script():
    return _Heldout


def test_generate_parts_and_sheet(tmp_path):
    ev = _script()
    n, S = 8, 32
    g = torch.Generator().manual_seed(0)
    p = RigParams.neutral(load_default_model(), n)
    p = p.replace(translation=torch.randn(n, 2, generator=g) * 0.05,
                  sources=[f"/x/clip{i % 2}.mp4#frame={i}" for i in range(n)])
    imgs = list((torch.rand(n, S, S, 3, generator=g) * 255).byte().numpy())
    cache = tmp_path / "c.safetensors"
    build_cache(imgs, p, [f"i{i}" for i in range(n)], S).save(cache)
    torch.manual_seed(0)
    DiffusionRigModel(preset("tiny")).save_pretrained(tmp_path / "m")
    out = tmp_path / "ev.npz"
    assert ev.main(["generate", "--model", str(tmp_path / "m"), "--cache", str(cache), "--group", "clip1",
                    "--train-items", "2", "--n", "2", "--steps", "2", "--refine", "1", "--parts", "2", "--no-fast",
                    "--device", "cpu", "--out", str(out)]) == 0
    parts = [tmp_path / "ev.part0.npz", tmp_path / "ev.part1.npz"]
    assert all(q.exists() for q in parts) and not out.exists()
    E = len(ev.EDITS)
    one = np.load(parts[0])
    assert one["target"].shape == (1, S, S, 3) and one["edits"].shape == (1, E, S, S, 3)
    assert one["req_light"].shape[0] == E and len(one["train_ids"]) == 2
    runs = ev._load_runs([str(q) for q in parts])
    (z,) = runs.values()
    assert z["edits"].shape[:2] == (2, E) and z["req_light"].shape[0] == 2 * E
    assert not set(z["ids"].tolist()) & set(z["train_ids"].tolist())  # held-out frames only
    meta = json.loads(str(z["meta"]))
    assert meta["steps"] == 2 and meta["group"] == "clip1"
    names = [str(x) for x in z["edit_names"]]
    rel = names.index("light_left_rel")
    from portraitrig.light import sh

    req = torch.tensor(z["req_light"]).view(2, E, 9, 3)
    src = torch.tensor(z["src_light"])
    assert torch.allclose(sh.mean_front_shading(req[:, rel]), sh.mean_front_shading(src), rtol=1e-4)
    # parts must come complete, once each, from one generation
    for bad in ([parts[0]], [parts[0], parts[0], parts[1]]):
        with pytest.raises(InputError, match="expected"):
            ev._load_runs([str(q) for q in bad])
    other = tmp_path / "other"  # another split of the person: not parts of the same generation
    assert ev.main(["generate", "--model", str(tmp_path / "m"), "--cache", str(cache), "--group", "clip1",
                    "--train-items", "1", "--n", "2", "--steps", "2", "--refine", "1", "--parts", "2", "--no-fast",
                    "--device", "cpu", "--out", str(other)]) == 0  # no .npz suffix: parts still named right
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ev.part0.npz").write_bytes(parts[0].read_bytes())
    (mixed / "ev.part1.npz").write_bytes((tmp_path / "other.part1.npz").read_bytes())
    with pytest.raises(InputError, match="not a part of the same generation"):
        ev._load_runs([str(mixed / "ev.part0.npz"), str(mixed / "ev.part1.npz")])
    sheet = tmp_path / "sheet.jpg"
    assert ev.main(["sheet", *map(str, parts), "--out", str(sheet), "--size", "40"]) == 0
    from PIL import Image

    assert Image.open(sheet).size == (40 * (E + 2), 40 * 2 + 18)
    # score: one report per run (two runs here), each with every edit's rig numbers
    report = tmp_path / "report.json"
    assert ev.main(["score", *map(str, parts), str(tmp_path / "other.part0.npz"), str(tmp_path / "other.part1.npz"),
                    "--out", str(report)]) == 0
    rep = json.loads(report.read_text())
    assert sorted(rep) == sorted([str(tmp_path / "ev"), str(tmp_path / "other")])
    for r in rep.values():
        assert r["n"] == 2 and sorted(r["rig_edits"]) == sorted(names) and sorted(r["identity_edits"]) == sorted(names)
