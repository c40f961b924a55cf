import jaxdiff  # noqa: F401  (XLA host devices before JAX starts)

# Tiny MAPPO settings shared by runner tests: compile fast, run in well under a second.
TINY = dict(num_envs=4, num_steps=8, update_epochs=1, num_minibatches=2, hidden=16)
