import os

# One persistent XLA compilation cache for the whole test session, shared by the xdist workers
# and by the CLI subprocesses the tests start (they inherit the environment): many tests compile
# the same tiny programs (the runner's MAPPO chunk above all), and a cache hit replaces a compile
# of several seconds. Set before JAX is imported; `make clean` removes it with .pytest_cache.
_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      ".pytest_cache", "jax-compilation-cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

# Test programs are tiny and compile-bound: without LLVM's optimisation passes (level 0) they
# compile about 4x faster than at XLA's default level (measured on 2 cores: a MAPPO init 8.6 s
# at the default, 2.8 s at level 1; a DDPL step 15-18 s at level 1, 9 s at level 0) and run
# slower, which tiny shapes do not feel (three compute-heavier test files: 129 s -> 104 s). Every
# property the tests check (jit == no-jit, resume == uninterrupted, vmap == loop) compares
# programs built with the same flags. The library itself never sets this;
# JAXDIFF_TEST_XLA_OPT=default keeps XLA's level, JAXDIFF_TEST_XLA_OPT=1 picks another.
if os.environ.get("JAXDIFF_TEST_XLA_OPT", "0") != "default" \
        and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level="
                               + os.environ.get("JAXDIFF_TEST_XLA_OPT", "0")).strip()

import jaxdiff  # noqa: E402

# The tests need 2 XLA host devices (sharding, env split): opted into here, before anything
# imports jax, since importing jaxdiff itself changes nothing (JAXDIFF_HOST_DEVICES still wins).
jaxdiff.use_host_devices()

# Tiny MAPPO settings shared by runner tests: compile fast, run in well under a second.
TINY = dict(num_envs=4, num_steps=8, update_epochs=1, num_minibatches=2, hidden=16)
