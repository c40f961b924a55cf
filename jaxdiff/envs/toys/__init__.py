"""Small analytic environments for tests and calibrated experiments.

Importing this package registers them (`jaxdiff.envs.make("coordination_game")`).
"""
from jaxdiff.envs.toys import coordination  # noqa: F401
