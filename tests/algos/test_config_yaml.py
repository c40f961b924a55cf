"""configs/algo/*.yaml against the algorithms' Configs: the Config is the one place for defaults.

Each YAML names a registered algorithm and holds per-env-family `presets`; a top-level setting
may only appear while it is listed in PENDING_DEFAULTS (a value that differs from the Config
default and is waiting to be moved into the Config). Presets hold valid settings for env
families that exist, and composing a run from the YAML gives exactly the preset on top of the
Config defaults.
"""
import pathlib

import pytest
import yaml

from jaxdiff import envs
from jaxdiff.algos import base

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "configs" / "algo").glob("*.yaml"))

# (file stem, key) -> the YAML value that differs from the Config default and still has to move
# into the Config (then delete the YAML key and its entry here). Every top-level value found
# when the YAMLs were trimmed equalled its Config default, so none is pending.
PENDING_DEFAULTS: dict[tuple[str, str], object] = {}


def _load(path):
    cfg = yaml.safe_load(path.read_text())
    assert isinstance(cfg, dict) and "name" in cfg, f"{path.name}: needs a `name`"
    return cfg.pop("name"), cfg.pop("presets", None) or {}, cfg


def _same(value, default) -> bool:
    """YAML value == Config default, as the config would hold it (YAML has lists, no tuples;
    ints compare equal to floats)."""
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    return type(value) in (int, float, bool, str, tuple) and value == default \
        and isinstance(value, bool) == isinstance(default, bool)


def test_every_built_in_algorithm_has_a_yaml():
    """`jaxdiff train algo=<name>` offers the algorithms that have a YAML: none may be missing."""
    built_in = {n for n in base.names()
                if base.get(n).init.__module__.startswith("jaxdiff.algos.")}
    assert {p.stem for p in FILES} == built_in


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_yaml_names_its_algorithm_and_holds_only_pending_defaults(path):
    name, _, top = _load(path)
    assert name == path.stem
    algorithm = base.get(name)
    fields = base.config_fields(algorithm.Config)
    for key, value in top.items():
        assert key in fields, f"{path.name}: `{key}` is not a field of the {name} Config"
        default = getattr(algorithm.Config(), key)
        if (path.stem, key) in PENDING_DEFAULTS:
            assert value == PENDING_DEFAULTS[path.stem, key], (path.name, key, value)
            assert not _same(value, default), (
                f"{path.name}: `{key}: {value!r}` now equals the Config default: delete it from "
                f"the YAML and from PENDING_DEFAULTS")
            continue
        assert not _same(value, default), (
            f"{path.name}: `{key}: {value!r}` repeats the Config default; delete it (the Config "
            f"is the one place for defaults)")
        pytest.fail(f"{path.name}: `{key}: {value!r}` differs from the Config default "
                    f"{default!r}: move it into the Config (or list it in PENDING_DEFAULTS)")
    for stem, key in PENDING_DEFAULTS:
        if stem == path.stem:
            assert key in top, f"PENDING_DEFAULTS lists {stem}.{key}, which the YAML lacks"


FAMILIES = sorted({n.split("_", 1)[0] for n in envs.names()})


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_presets_are_valid_overrides_for_existing_env_families(path):
    name, presets, _ = _load(path)
    algorithm = base.get(name)
    fields = base.config_fields(algorithm.Config)
    assert isinstance(presets, dict)
    for family, over in presets.items():
        # the runner picks the preset of env `<family>_...`: a misspelt family never applies
        assert family in FAMILIES, (path.name, family, FAMILIES)
        assert isinstance(over, dict), (path.name, family)
        unknown = set(over) - set(fields)
        assert not unknown, (path.name, family, unknown)
        config = base.make_config(algorithm.Config, over)          # types and ranges pass
        for key, value in over.items():                             # and the values arrive
            assert _same(value, getattr(config, key)), (path.name, family, key, value)


@pytest.mark.parametrize("path", [p for p in FILES if p.stem != "state_diffusion"],
                         ids=lambda p: p.stem)
def test_composed_run_config_is_the_preset_on_the_config_defaults(path):
    """What `jaxdiff train algo=<name> env=<env>` hands the runner: the family preset and nothing
    else, so every other setting comes from the Config."""
    from jaxdiff import cli

    name, presets, _ = _load(path)
    for env in ("mpe_simple_spread", "smax_3m", "mabrax_ant_4x2"):
        cfg = cli.compose([f"algo={name}", f"env={env}"])
        assert cfg["algo"] == presets.get(env.split("_", 1)[0], {}), (name, env, cfg["algo"])
