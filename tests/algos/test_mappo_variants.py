"""MAPPO/IPPO variants run one training iteration with finite metrics and respect masks."""
import jax
import numpy as np
import pytest

from jaxdiff import envs
from jaxdiff.algos import base, mappo

TINY = dict(num_envs=2, num_steps=4, update_epochs=1, num_minibatches=1, hidden=8)


@pytest.mark.parametrize("algo, env_name, env_kw, over", [
    ("mappo", "mpe_simple_spread", {"action_type": "continuous"}, {}),
    ("ippo", "mpe_simple_speaker_listener", {}, {"shared_params": False}),
    # 40 s of compile; SMAX MAPPO-RNN also runs in the JaxMARL comparison and with -m slow
    pytest.param("mappo", "smax_3m", {}, {"recurrent": True, "value_norm": True},
                 marks=pytest.mark.slow),
])
def test_variant_trains_one_step(algo, env_name, env_kw, over):
    algorithm = base.get(algo)
    env = envs.make(env_name, **env_kw)
    config = base.make_config(algorithm.Config, dict(TINY, **over))
    state = jax.jit(lambda k: algorithm.init(k, env, config))(jax.random.PRNGKey(0))
    new, metrics = jax.jit(algorithm.step(env, config, iterations=8))(state)
    for k, v in metrics.items():
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(v)), k
    changed = [not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(state.actor), jax.tree.leaves(new.actor))]
    assert any(changed)
    if not config.shared_params:  # per-agent parameters: leading agent axis
        assert all(x.shape[0] == env.spec.n_agents for x in jax.tree.leaves(new.actor))


def test_masked_actions_are_never_sampled():
    env = envs.make("mpe_simple_speaker_listener")  # speaker has 3 actions, listener 5
    config = base.make_config(mappo.Config, TINY)
    state = jax.jit(lambda k: mappo.init(k, env, config))(jax.random.PRNGKey(0))
    obs, es = env.reset(jax.random.PRNGKey(1))
    mask = env.action_mask(es)
    keys = jax.random.split(jax.random.PRNGKey(2), 512)
    carry = mappo.init_carry(config, env)
    acts = jax.jit(jax.vmap(lambda k: mappo.act(config, env, state, obs, carry, mask, k,
                                                deterministic=False)[0]))(keys)
    sizes = np.asarray(env.spec.act_sizes)
    assert (np.asarray(acts) < sizes[None, :]).all()
    assert (np.asarray(acts)[:, 0] == 2).any()  # the speaker's last valid action does occur
