"""Inferred-state observations: each agent's individual-diffusion estimate of the global state
appended to its observation (paper 000, Appendix C; spec-state-diffusion F28).

The paper's optional experiment gives MAPPO's actors the state ŝ_i that agent i infers from
its own history with the trained denoiser, and compares win rates with plain MAPPO. Here that
is an env wrapper, so any algorithm can use it unchanged:

    jaxdiff train algo=state_diffusion env=smax_zerg_5v5 algo.dataset=datasets/zerg run_dir=runs/sd
    jaxdiff train algo=mappo env=smax_zerg_5v5 env.inferred_state=runs/sd

`env.inferred_state=<run_dir of a state_diffusion run>` loads that run's last checkpoint (seed
`env.inferred_state_member`, default 0) and wraps the env: the wrapper keeps each agent's
history window τ_i (the encoding of `jaxdiff.data.history`, the one the denoiser was trained
on) in the env state, and after every reset and step runs the individual flow
ŝ_i = φ_L(τ_i)(y0), y0 ~ N(0, σ_init² I) shared by the agents (the evaluation protocol of
`algo=state_diffusion`), and returns obs_i ⊕ ŝ_i. Centralised critics keep the true global
state. The denoiser's parameters are constants of the compiled program (they are not trained).

[CHOICE] The paper gives no details (spec ambiguity 19): L and σ_init are the state_diffusion
run's own `flow_steps` and `sigma_init`; ŝ_i is appended for every agent, dead ones included
(their observation is zero, so is their history).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxdiff.data import history as hist
from jaxdiff.envs import registry
from jaxdiff.envs.base import Env
from jaxdiff.envs.wrappers import Wrapper
from jaxdiff.statediff.denoiser import DenoiseFn, Denoiser, denoise_fn
from jaxdiff.statediff.infer import individual_estimates


@struct.dataclass
class InferredStateEnvState:
    env_state: Any
    history: jax.Array    # f32[n, H, block], the agents' windows τ (most recent first)


class InferredStateObs(Wrapper):
    """Wrap `env` so that obs [n, obs_dim] becomes [n, obs_dim + state_dim] = obs_i ⊕ ŝ_i.

    f: the denoiser f(τ, y) -> y; hspec: the history encoding it was trained on (its n_agents,
    obs_dim and action features must match `env`); state_dim: |s|; num_steps: L."""

    def __init__(self, env: Env, f: DenoiseFn, hspec: hist.HistorySpec, state_dim: int,
                 num_steps: int = 10, sigma_init: float = 1.0):
        s = env.spec
        want = (s.n_agents, s.obs_dim, s.act_dim)
        got = (hspec.n_agents, hspec.obs_dim, hspec.n_actions)
        if want != got or hspec.discrete != s.discrete:
            raise ValueError(
                f"The denoiser's history encoding (agents, obs dim, action features = {got}, "
                f"{'discrete' if hspec.discrete else 'continuous'}) does not match env "
                f"`{s.name}` ({want}, {'discrete' if s.discrete else 'continuous'}). Use a "
                f"state_diffusion run trained on data collected from this env.")
        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps} must be >= 1")
        super().__init__(env)
        self.f, self.hspec = f, hspec
        self.state_dim, self.num_steps, self.sigma_init = state_dim, num_steps, sigma_init
        self.spec = s.replace(obs_dim=s.obs_dim + state_dim,
                              obs_sizes=tuple(o + state_dim for o in s.obs_sizes))

    def _observe(self, key, window, obs):
        y0 = self.sigma_init * jax.random.normal(key, (self.state_dim,))
        est = individual_estimates(self.f, hist.encode(self.hspec, window), y0, self.num_steps)
        return jnp.concatenate([obs, est.astype(obs.dtype)], axis=-1)   # ŝ_i: obs[:, obs_dim:]

    def reset(self, key):
        k_env, k_y = jax.random.split(key)
        obs, env_state = self.env.reset(k_env)
        no_action = jnp.zeros((self.spec.n_agents,) if self.spec.discrete
                              else (self.spec.n_agents, self.spec.act_dim),
                              jnp.int32 if self.spec.discrete else jnp.float32)
        window = hist.push(self.hspec, hist.init(self.hspec), obs, no_action, True)
        return self._observe(k_y, window, obs), InferredStateEnvState(env_state, window)

    def step(self, key, state: InferredStateEnvState, actions):
        k_env, k_y = jax.random.split(key)
        obs, env_state, reward, done, info = self.env.step(k_env, state.env_state, actions)
        # After an episode end the env has auto-reset: `obs` starts a new episode.
        window = hist.push(self.hspec, state.history, obs, actions, done[0])
        out = self._observe(k_y, window, obs)
        return out, InferredStateEnvState(env_state, window), reward, done, info


def load_denoiser(run_dir: str, member: int = 0, *, restore_state):
    """The denoiser of a `state_diffusion` run's last checkpoint, read by `restore_state`
    (`jaxdiff.run.runner.restore_state`, passed in: this module sits below the runner).

    -> (f, hspec, state_dim, config, env name of its dataset) with f(τ, y) closed over the
    parameters of ensemble member `member` (seed index; grid point 0)."""
    from jaxdiff.data import load_dataset

    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"`inferred_state={run_dir}`: not a jaxdiff run directory (no "
                                f"config.json). Pass the run_dir of a finished "
                                f"`jaxdiff train algo=state_diffusion ...` run.")
    with open(cfg_path) as f:
        algo = json.load(f).get("algo")
    if algo != "state_diffusion":
        raise ValueError(f"`inferred_state={run_dir}` is a `{algo}` run; it must be a "
                         f"`state_diffusion` run (the denoiser whose estimates are appended).")
    spec, _, _, config, state, members = restore_state(run_dir)
    if not 0 <= member < len(members):
        raise ValueError(f"`inferred_state_member={member}`: the run at {run_dir} has "
                         f"{len(members)} ensemble member(s).")
    params = jax.tree.map(lambda x: x[member], state.params)
    ds = load_dataset(config.dataset)
    hspec = ds.history_spec.replace_history(config.history or ds.history_spec.history)
    state_dim = int(ds.meta["state_dim"])
    model = Denoiser(state_dim=state_dim, width=config.width, depth=config.depth,
                     activation=config.activation)
    return denoise_fn(model, params), hspec, state_dim, config, ds.meta["env"]


def wrap_from_run(env: Env, run_dir: str, member: int = 0, *, restore_state) -> InferredStateObs:
    """`InferredStateObs` around `env` with the denoiser of a state_diffusion run."""
    f, hspec, state_dim, config, data_env = load_denoiser(run_dir, member,
                                                          restore_state=restore_state)
    if data_env != env.spec.name:
        raise ValueError(f"`inferred_state={run_dir}`: its denoiser was trained on `{data_env}` "
                         f"data, not `{env.spec.name}`; use `env={data_env}` or another run.")
    return InferredStateObs(env, f, hspec, state_dim, num_steps=config.flow_steps,
                            sigma_init=float(config.sigma_init))


def register_env_options(restore_state) -> None:
    """Make `inferred_state=<state_diffusion run_dir>` (and `inferred_state_member=<seed>`) an
    option of every env in the registry. Called by the runner, which owns `restore_state`
    (envs know nothing of statediff; the option is registered from above)."""
    def wrap_option(env: Env, options: dict) -> Env:
        run_dir = options.get("inferred_state")
        if not run_dir:
            return env
        return wrap_from_run(env, str(run_dir), int(options.get("inferred_state_member") or 0),
                             restore_state=restore_state)

    registry.register_wrapper(("inferred_state", "inferred_state_member"), wrap_option)
