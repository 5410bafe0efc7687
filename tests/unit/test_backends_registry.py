"""Backend registry: built-ins, the ``pilip.backends`` entry-point group, and its errors."""

from __future__ import annotations

import importlib
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from pilip import keys
from pilip.errors import PilipError
from pilip.reference.backends import (
    BUILTIN,
    ENTRY_POINT_GROUP,
    available_backends,
    get_backend,
    make_backend,
)
from pilip.reference.backends.base import Backend, read_results
from pilip.reference.backends.xtb_backend import XTBBackend

TOY_PLUGIN = '''
"""An outside package's backend: every atom contributes -1 eV per proton."""
import time
from pilip.reference.backends.base import (
    Backend, append_result, open_results_for_append, pending_configs, result_record,
)


class ToyBackend(Backend):
    name = "toy"

    def run(self, configs, results, *, threads, gradients, scratch, retry_options, timeout_s):
        with open_results_for_append(results) as fh:
            for c in pending_configs(configs, results):
                forces = [[0.0, 0.0, 0.0] for _ in c["numbers"]] if gradients else None
                append_result(fh, result_record(
                    c["id"], status="ok", energy=-float(sum(c["numbers"])), forces=forces,
                    components={"toy/none": -sum(c["numbers"]) / 27.211386245988},
                    error=None, wall_time=0.0, attempts=1, threads=threads,
                    provenance=self.provenance(),
                ))


class NotABackend:
    pass
'''


def install_plugin(root: Path, entries: dict[str, str], module_source: str) -> None:
    """Lay out an installed distribution (module + dist-info with entry points) under root."""
    (root / "pilip_toy_plugin.py").write_text(textwrap.dedent(module_source))
    info = root / "pilip_toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pilip-toy-plugin\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}\n")


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    install_plugin(
        tmp_path,
        {
            "toy": "pilip_toy_plugin:ToyBackend",
            "notabackend": "pilip_toy_plugin:NotABackend",
            "gone": "pilip_toy_plugin_missing:Backend",
            "xtb": "pilip_toy_plugin:ToyBackend",
        },
        TOY_PLUGIN,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("pilip_toy_plugin", None)


def test_builtins_and_pyscf_entry_point_are_listed():
    known = available_backends()
    assert {"psi4", "xtb", "pyscf"} <= set(known)
    # pyscf is registered only the way an outside package would: through the entry point
    assert "pyscf" not in BUILTIN
    assert "pyscf" in {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def test_get_builtin_backend():
    cls = get_backend("xtb")
    assert cls is XTBBackend
    assert issubclass(cls, Backend) and cls.name == "xtb"


def test_unknown_backend_lists_known_ones():
    with pytest.raises(PilipError) as info:
        get_backend("gaussian")
    message = str(info.value)
    assert "unknown backend 'gaussian'" in message
    assert "psi4" in message and "xtb" in message and "pyscf" in message
    assert "\n" not in message


def test_missing_backend_key_is_one_line_error():
    with pytest.raises(PilipError, match=r"references\.mine\.backend is missing"):
        make_backend("mine", {"method": "GFN2-xTB"})


def test_outside_plugin_is_discovered_and_runs(toy_plugin, tmp_path):
    assert "toy" in available_backends()
    backend = make_backend("my_ref", {"backend": "toy", "method": "toy"})
    assert type(backend).__name__ == "ToyBackend" and backend.reference == "my_ref"
    configs = [
        {"id": "a", "numbers": [8, 1, 1], "positions": [[0, 0, 0]] * 3, "charge": 0,
         "multiplicity": 1},
    ]  # fmt: skip
    results = tmp_path / "r.jsonl"
    backend.run(configs, results, threads=1, gradients=False, scratch=tmp_path,
                retry_options=None, timeout_s=None)  # fmt: skip
    record = read_results(results)["a"]
    assert record["status"] == keys.STATUS_OK and record["energy"] == -10.0
    assert record["program"] == "toy" and record["method"] == "toy"


def test_plugin_that_is_not_a_backend_is_refused(toy_plugin):
    with pytest.raises(PilipError, match="not a subclass of pilip.reference.backends.base.Backend"):
        get_backend("notabackend")


def test_plugin_that_cannot_be_imported_names_the_fix(toy_plugin):
    with pytest.raises(PilipError, match="cannot be loaded.*install the package"):
        get_backend("gone")


def test_builtin_names_cannot_be_shadowed(toy_plugin):
    assert get_backend("xtb") is XTBBackend


def test_spin_check_in_base_backend(toy_plugin):
    backend = make_backend("my_ref", {"backend": "toy"})
    hydroxyl = {"id": "oh", "numbers": [8, 1], "positions": [[0, 0, 0], [0, 0, 1]],
                "charge": 0, "multiplicity": 1}  # fmt: skip
    with pytest.raises(PilipError, match="9 electrons .* cannot have multiplicity 1"):
        backend.check([hydroxyl])
    backend.check([{**hydroxyl, "multiplicity": 2}])
    backend.check([{**hydroxyl, "charge": -1}])


def test_docs_example_plugin_works_as_written(tmp_path, monkeypatch):
    """docs/backends.md's "Add your own reference method" example, installed and run."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    from pilip import tables
    from pilip.reference import labels
    from pilip.reference.labelling import label_table

    docs = (Path(__file__).resolve().parents[2] / "docs" / "backends.md").read_text()
    section = docs.split("## Add your own reference method", 1)[1]
    source = next(b for b in section.split("```python\n")[1:] if "class EMTBackend" in b)
    source = source.split("```", 1)[0]
    entry = section.split('[project.entry-points."pilip.backends"]\n', 1)[1].split("\n")[0]
    name, target = (part.strip().strip('"') for part in entry.split("="))
    package = tmp_path / "my_pilip_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "emt_backend.py").write_text(source)
    info = tmp_path / "my_pilip_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pilip-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.chdir(tmp_path)

    water = molecule("H2O")
    table = tables.configurations_from_atoms([water], system="water", generator="seed")
    tables.write_table(table, tmp_path / "water.parquet", "configurations", {})
    config = {"systems": {"water": {"seed": "H2O"}}, "references": {"emt": {"backend": "emt"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    label_table("water.parquet", "emt", "labels.parquet", gradients=True)
    result = labels.read_labels(tmp_path / "labels.parquet")
    water.calc = EMT()
    assert result.column(keys.ENERGY)[0].as_py() == water.get_potential_energy()
    assert result.column(keys.PROGRAM)[0].as_py() == "ase-emt"
    sys.modules.pop("my_pilip_plugin.emt_backend", None)
    sys.modules.pop("my_pilip_plugin", None)


def test_stable_import_paths_for_plugins_and_ase_users():
    """Plug-ins name ``pilip.backends.base.Backend`` in their code and entry points, and ASE
    users import ``pilip.calculator.PilipCalculator``: both stay the real classes after the
    move into pilip.reference / pilip.potential."""
    import pilip.backends
    import pilip.backends.base
    import pilip.calculator
    from pilip.potential.calculator import PilipCalculator
    from pilip.reference.backends import make_backend
    from pilip.reference.backends.base import Backend, compute_pending

    assert pilip.backends.base.Backend is Backend
    assert pilip.backends.base.compute_pending is compute_pending
    assert pilip.backends.make_backend is make_backend
    assert pilip.calculator.PilipCalculator is PilipCalculator
