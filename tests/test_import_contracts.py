"""The design's dependency rule, as import-linter contracts (pyproject.toml): kept, and covering
every built-in algorithm module (a new algorithm must join the independence contract)."""
import os
import subprocess
import sys
import tomllib

from jaxdiff.algos import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _contracts():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_every_algorithm_module_is_in_the_peer_contracts():
    modules = set(base.BUILTIN.values())
    by_type = {c["type"]: c for c in _contracts()}
    assert set(by_type["independence"]["modules"]) == modules
    assert set(by_type["forbidden"]["forbidden_modules"]) == modules


def test_import_contracts_are_kept():
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and "BROKEN" not in out.stdout
