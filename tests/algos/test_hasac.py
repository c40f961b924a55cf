"""HASAC: the squashed-Gaussian log-prob is the density of the env's action, n-step windows
respect episode ends, the critics regress onto the known Q of one-step games (discrete with masks,
continuous), temperature auto-tuning drives the entropy to its target, checkpoints round-trip, and a tiny run trains
through the runner (2 seeds, continuous simple_spread). Slow: resume == uninterrupted run, and
HASAC beats random on simple_spread."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.algos import base, hasac, offpolicy
from jaxdiff.nets import policies
from jaxdiff.envs.base import Env, EnvSpec
from jaxdiff.envs.toys.coordination import CoordinationGame
from jaxdiff.envs.wrappers import EpisodeStats
from jaxdiff.nets.agents import apply_agents
from jaxdiff.run import logging as runlog
from jaxdiff.run import runner
from jaxdiff.run.checkpoint import Checkpointer


class Bandit(Env):
    """One-step continuous game: n agents pick a in [low, high]^d; the team reward is
    1 - sum_i |a^i - c|^2 * weight. Q(s, a) = r(a) exactly (every episode terminates)."""

    def __init__(self, n_agents=2, act_dim=2, low=-1.0, high=1.0, centre=0.3, weight=1.0):
        self.centre, self.weight = centre, weight
        self.spec = EnvSpec(name="bandit", n_agents=n_agents, obs_dim=1,
                            obs_sizes=(1,) * n_agents, discrete=False, act_dim=act_dim,
                            act_sizes=(act_dim,) * n_agents, action_low=low, action_high=high,
                            state_dim=1, max_steps=1, shared_reward=True, has_win=False)

    def reward(self, actions):
        return 1.0 - self.weight * jnp.sum((actions - self.centre) ** 2, axis=(-2, -1))

    def reset(self, key):
        return jnp.ones((self.spec.n_agents, 1)), jnp.zeros((), jnp.int32)

    def step(self, key, state, actions):
        n = self.spec.n_agents
        info = {"won": jnp.zeros(()), "terminated": jnp.ones((), bool)}
        return (jnp.ones((n, 1)), state, jnp.full((n,), self.reward(actions)),
                jnp.ones((n,), bool), info)

    def global_state(self, state):
        return jnp.ones((1,))

    def action_mask(self, state):
        return jnp.ones((self.spec.n_agents, self.spec.act_dim), bool)


def _train(env, overrides, iters, seed=0):
    cfg = base.make_config(hasac.Config, overrides)
    state = jax.jit(lambda k: hasac.init(k, env, cfg))(jax.random.PRNGKey(seed))
    step = jax.jit(hasac.step(env, cfg))
    for _ in range(iters):
        state, metrics = step(state)
    return cfg, state, metrics


def _policy_entropy(env, cfg, state, key, samples=4096):
    """Monte-Carlo entropy -E[log pi] of each agent's policy at the bandit's constant obs."""
    p = hasac._parts(env, cfg)
    out = apply_agents(p.actor, state.actor, False, jnp.ones((p.n, 1)))
    keys = jax.random.split(key, samples)
    logp = jax.vmap(lambda k: jax.vmap(
        lambda o, kk, dm: policies.squashed_sample(o, kk, dm, p.low, p.high)[1])(
            out, jax.random.split(k, p.n), jnp.asarray(p.dim_mask)))(keys)
    return -logp.mean(0)


# ----------------------------------------------------------------------------- policies
@pytest.mark.parametrize("low, high", [(-1.0, 1.0), (0.0, 1.0), (-2.0, 3.0)])
def test_squashed_log_prob_is_the_density_of_the_env_action(low, high):
    env = Bandit(n_agents=1, act_dim=1, low=low, high=high)
    p = hasac._parts(env, base.make_config(hasac.Config, dict(hidden=8)))
    mean, log_std = jnp.array([0.4]), jnp.array([-0.3])

    def density(a):   # change of variables written out independently
        y = 2 * (a - low) / (high - low) - 1
        u = jnp.arctanh(y)
        normal = jnp.exp(-0.5 * ((u - mean) / jnp.exp(log_std)) ** 2) / (
            jnp.exp(log_std) * jnp.sqrt(2 * jnp.pi))
        return normal / ((1 - y ** 2) * 0.5 * (high - low))

    grid = jnp.linspace(low, high, 200_001)[1:-1, None]
    mass = jnp.trapezoid(density(grid)[:, 0], grid[:, 0])
    assert abs(float(mass) - 1.0) < 1e-3
    keys = jax.random.split(jax.random.PRNGKey(0), 512)
    a, logp = jax.vmap(lambda k: policies.squashed_sample((mean, log_std), k,
                                                          jnp.ones((1,)), p.low, p.high))(keys)
    assert float(a.min()) >= low and float(a.max()) <= high
    np.testing.assert_allclose(logp, jnp.log(density(a))[:, 0], rtol=2e-3, atol=2e-3)


# ----------------------------------------------------------------------------- replay
def test_nstep_windows_respect_episode_ends():
    """Buffer of E=2 envs x L=12 steps with a termination and a time-limit end; every sampled
    window's return, bootstrap discount/state and validity match a direct computation."""
    E, L, n, gamma = 2, 12, 4, 0.9
    rng = np.random.default_rng(0)
    reward = rng.normal(size=(E, L)).astype(np.float32)
    done = np.zeros((E, L), bool)
    term = np.zeros((E, L), bool)
    done[0, 3] = term[0, 3] = True          # env 0: termination at t=3
    done[1, 5] = True                       # env 1: time limit at t=5
    done[0, 9] = True                       # env 0: time limit at t=9
    tag = np.arange(E)[:, None] * 100.0 + np.arange(L)[None, :]     # obs encodes (env, t)
    exp = dict(obs=jnp.asarray(tag[..., None, None]), gstate=jnp.asarray(tag[..., None]),
               action=jnp.zeros((E, L, 1, 1)), reward=jnp.asarray(reward),
               done=jnp.asarray(done), term=jnp.asarray(term))
    from flashbax.buffers.trajectory_buffer import TrajectoryBufferState
    buf = TrajectoryBufferState(experience=exp, current_index=jnp.array(0),
                                is_full=jnp.array(True))
    out = jax.jit(lambda k: offpolicy.nstep_sample(buf, k, 512, n, gamma))(jax.random.PRNGKey(1))
    starts = set()
    for b in range(512):
        e, t = divmod(int(out["obs"][b, 0, 0]), 100)
        starts.add((e, t))
        assert t + n <= L - 1                # the whole window is stored
        ret, m, boot, valid = 0.0, n, True, 1.0
        for k in range(n):
            if done[e, t + k]:
                if term[e, t + k]:
                    ret += gamma ** k * reward[e, t + k]
                    boot = False
                elif k == 0:
                    valid = 0.0
                m = k
                break
            ret += gamma ** k * reward[e, t + k]
        np.testing.assert_allclose(out["ret"][b], ret, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["boot_disc"][b], gamma ** m if boot else 0.0, rtol=1e-5)
        assert float(out["valid"][b]) == valid
        if boot:
            assert int(out["boot_gstate"][b, 0]) == e * 100 + t + m
    assert len(starts) == E * (L - n)       # every admissible start is reachable


# ----------------------------------------------------------------------------- critic
class MaskedGame(CoordinationGame):
    """3 actions, agent 0 may not play action 2, which pays a bonus: r = 1{a^1 = a^2} +
    #{agents playing 2}. One step, so Q(s, a) = r(a) for every feasible joint action."""
    def step(self, key, state, actions):
        obs, state, r, done, info = super().step(key, state, actions)
        return obs, state, r + (actions == 2).sum().astype(jnp.float32), done, info

    def action_mask(self, state):
        return jnp.ones((2, 3), bool).at[0, 2].set(False)


@pytest.mark.parametrize("discrete_grad, successor_actions", [
    ("expected", "policy"), pytest.param("gumbel", "buffer", marks=pytest.mark.slow)])
def test_discrete_critic_regresses_onto_the_game_q_and_masks_hold(discrete_grad,
                                                                  successor_actions):
    """Actors frozen (lr 0) near uniform over their available actions, so every feasible joint
    action is in the data; the masked action is never stored, sampled or given probability."""
    env = EpisodeStats(MaskedGame(n_agents=2, n_actions=3))
    cfg, state, m = _train(env, dict(num_envs=16, train_interval=4, updates_per_train=25,
                                     warmup_steps=64, buffer_size=640, batch_size=128, hidden=32,
                                     n_step=1, value_norm=False, huber_delta=0.0, lr=0.0,
                                     critic_lr=3e-3, auto_alpha=True,
                                     discrete_grad=discrete_grad,
                                     successor_actions=successor_actions), iters=16)
    assert all(math.isfinite(float(v)) for v in jax.tree.leaves(m))
    assert float(m["valid_frac"]) == 1.0
    p = hasac._parts(env, cfg)
    pairs = [(a, b) for a in range(2) for b in range(3)]
    joint = jnp.stack([jax.nn.one_hot(jnp.array(ab), 3) for ab in pairs])
    q = hasac.twin_q(p, state.critic, jnp.ones((len(pairs), 1)), joint)
    true = jnp.array([float(a == b) + (a == 2) + (b == 2) for a, b in pairs])
    np.testing.assert_allclose(q, jnp.broadcast_to(true, q.shape), atol=0.05)
    mask = env.unwrapped.action_mask(None)
    acts = jax.vmap(lambda k: hasac.act(cfg, env, state, jnp.ones((2, 1)), {}, mask, k,
                                        deterministic=False)[0])(jax.random.split(jax.random.PRNGKey(1), 256))
    assert not bool((acts[:, 0] == 2).any()) and bool((acts[:, 1] == 2).any())
    stored = state.buffer.experience["action"][:, :int(state.buffer.current_index)]
    assert not bool((stored[..., 0] == 2).any())


@pytest.mark.slow   # a learning check (1000 updates); the auto-alpha path also runs in the
# discrete test above, in `make test`
def test_auto_alpha_drives_entropy_to_target_and_critic_fits_the_bandit_q():
    """A one-step bandit whose reward pays for concentration, against the entropy bonus: with
    the temperature tuned, each agent's entropy settles at its target -|A^i|; the critics fit
    Q(s, a) = r(a) on the actions the policies now take."""
    env = EpisodeStats(Bandit(n_agents=2, act_dim=1, low=-1.0, high=1.0, centre=0.2,
                              weight=5.0))
    target = -1.0
    overrides = dict(num_envs=8, train_interval=2, updates_per_train=25, warmup_steps=0,
                     buffer_size=512, batch_size=256, hidden=32, n_step=1, value_norm=False,
                     huber_delta=0.0, lr=3e-3, critic_lr=3e-3, alpha=0.5, alpha_lr=3e-2,
                     auto_alpha=True)
    cfg, state, _ = _train(env, overrides, iters=40)
    entropy = _policy_entropy(env, cfg, state, jax.random.PRNGKey(3))
    alpha = np.exp(np.asarray(state.log_alpha))
    assert np.all(np.abs(np.asarray(entropy) - target) < 0.35), (entropy, alpha)
    assert np.all(alpha < 0.5)                # the temperature moved to get there
    p = hasac._parts(env, cfg)
    keys = jax.random.split(jax.random.PRNGKey(4), 128)
    probe = jax.vmap(lambda k: hasac.act(cfg, env, state, jnp.ones((2, 1)), {},
                                         jnp.ones((2, 1), bool), k, deterministic=False)[0])(keys)
    q = hasac.twin_q(p, state.critic, jnp.ones((128, 1)), probe)
    err = jnp.abs(q - env.unwrapped.reward(probe)[None])
    assert float(err.mean()) < 0.1, float(err.mean())


# ----------------------------------------------------------------------------- runner
TINY = dict(num_envs=4, train_interval=25, updates_per_train=4, warmup_steps=200,
            buffer_size=400, batch_size=32, hidden=16, n_step=5)


def _spec(**kw):
    args = dict(algo="hasac", env="mpe_simple_spread", env_kwargs={"action_type": "continuous"},
                algo_overrides=dict(TINY, auto_alpha=True), seeds=2, total_steps=400, chunks=2,
                eval_episodes=4)
    args.update(kw)
    return runner.RunSpec(**args)


@pytest.mark.slow
def test_smoke_train_continuous_spread(tmp_path):
    summary = runner.train(_spec(), str(tmp_path), progress=False, quiet=True)
    assert math.isfinite(summary["final"]["return_mean"])
    rows = runlog.read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert len(rows) == 4 and rows[-1]["step"] == 400
    for r in rows:
        for k in ("critic_loss", "actor_loss", "entropy", "alpha", "q_mean", "train_return"):
            assert math.isfinite(r[k]), k
    assert rows[-1]["learning"] == 1.0 and rows[0]["learning"] == 0.5   # warm-up: 1st of 2


def test_checkpoint_round_trips_the_whole_state(tmp_path):
    """Orbax saves a seed-vmapped HASAC state (replay buffer with float, int and bool fields
    included) and restores it leaf for leaf into the structure `eval_shape(init)` describes,
    which is what the runner's resume does."""
    env = EpisodeStats(MaskedGame(n_agents=2, n_actions=3))
    cfg = base.make_config(hasac.Config, dict(TINY, auto_alpha=True))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    hp = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 2), cfg)
    init_fn = jax.jit(jax.vmap(lambda k, c: hasac.init(k, env, c)))
    state = init_fn(keys, hp)
    leaves, treedef = jax.tree.flatten(state.buffer.experience)
    rng = np.random.default_rng(0)       # host noise: no per-shape RNG program to compile
    noise = [jnp.asarray(rng.integers(0, 3, x.shape).astype(x.dtype) if x.dtype != jnp.float32
                         else rng.standard_normal(x.shape, np.float32)) for x in leaves]
    buffer = state.buffer.replace(experience=jax.tree.unflatten(treedef, noise),
                                  current_index=jnp.full((2,), 7), is_full=jnp.ones((2,), bool))
    state = state.replace(buffer=buffer, log_alpha=state.log_alpha - 0.5)
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(1, state, dict(chunk=1, step=100))
    _, restored, _ = ckpt.restore_latest(jax.eval_shape(init_fn, keys, hp))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    spec = _spec(total_steps=800, chunks=4)
    s_full = runner.train(spec, str(full), progress=False)
    runner.train(spec, str(part), progress=False, max_chunks=2)
    s_res = runner.train(spec, str(part), progress=False)
    assert s_res["complete"] and s_res["final"] == s_full["final"]
    a = runner.restore_state(str(full))[4]
    b = runner.restore_state(str(part))[4]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_beats_random_on_simple_spread(tmp_path):
    """Random policies score about -78 per 25-step episode; HASAC with the mpe preset (as
    `jaxdiff train algo=hasac env=mpe_simple_spread` applies it) does clearly better within
    50k steps (-58 measured, 2 seeds; about 2.5 min on 2 CPU cores)."""
    import yaml
    with open(os.path.join(os.path.dirname(__file__), "../../configs/algo/hasac.yaml")) as f:
        preset = yaml.safe_load(f)["presets"]["mpe"]
    spec = runner.RunSpec(algo="hasac", env="mpe_simple_spread",
                          env_kwargs={"action_type": "continuous"}, algo_overrides=preset,
                          seeds=2, total_steps=50_000, chunks=5, eval_episodes=32)
    summary = runner.train(spec, str(tmp_path), progress=False, quiet=True)
    assert summary["final"]["return_mean"] > -66, summary["final"]
