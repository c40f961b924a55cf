import jaxdiff  # noqa: F401

# Tiny MAPPO settings shared by runner tests: compile fast, run in well under a second.
TINY = dict(num_envs=4, num_steps=8, update_epochs=1, num_minibatches=2, hidden=16)
