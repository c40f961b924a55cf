"""JaxMARL is imported lazily (`jaxdiff.envs.jaxmarl.import_jaxmarl`): its package `__init__`
(every env JaxMARL ships, ~11 s) runs only when something other than a submodule is asked of
it, and then quietly and completely. The mechanism on a throw-away package (cheap, exact), and
JaxMARL's own API after jaxdiff has imported it."""
import sys

from jaxdiff.envs import jaxmarl as adapter


def test_lazy_package_runs_init_only_on_first_non_submodule_access(tmp_path, capsys):
    pkg = tmp_path / "lazypkg_probe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("print('init ran')\nimport sys\nsys.stdout = sys.__stdout__\n"
                                     "from .sub.leaf import VALUE\nEXTRA = VALUE + 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("VALUE = 41\n")
    stdout = sys.stdout
    try:
        mod = adapter._lazy_package("lazypkg_probe", str(pkg))
        from lazypkg_probe.sub.leaf import VALUE        # a submodule: __init__ does not run
        from lazypkg_probe import sub                   # noqa: F401  (nor through the fromlist)
        assert VALUE == 41 and "EXTRA" not in vars(mod)
        assert mod.EXTRA == 42                          # first other access: __init__ runs
        assert mod.VALUE == 41 and "EXTRA" in vars(mod)
        assert sys.stdout is stdout                     # its stream reset was undone
        assert "init ran" not in capsys.readouterr().out    # and its print silenced
        try:
            mod.missing
        except AttributeError as e:
            assert "lazypkg_probe" in str(e)
        else:
            raise AssertionError("missing attribute did not raise")
    finally:
        for name in [m for m in sys.modules if m.startswith("lazypkg_probe")]:
            del sys.modules[name]


def test_jaxmarl_api_works_after_jaxdiff_imported_it():
    from jaxdiff import envs
    envs.make("mpe_simple_spread")
    import jaxmarl
    assert type(jaxmarl.make("MPE_simple_spread_v3")).__name__ == "SimpleSpreadMPE"
    from jaxmarl.environments import SimpleSpreadMPE  # noqa: F401
