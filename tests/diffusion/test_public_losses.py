"""`from jaxdiff import losses` works in a fresh interpreter, and its losses jit, vmap and grad."""
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from jaxdiff import losses
from jaxdiff.diffusion import cosine_schedule, ve_schedule

expected = {"denoising_loss_eps", "denoising_loss_x0", "denoising_errors_eps",
            "denoising_errors_x0", "weighted_mean", "weighted_sq_error_loss",
            "per_sample_sq_error", "issm", "importance_weights", "paper_time_weights",
            "qv_weights", "qv_weighted", "diffusion_entropy", "dispersion_ratio", "adaptive_alpha",
            "ppo_clip_loss", "line_search"}
missing = expected - set(losses.__all__)
assert not missing, missing

schedule = cosine_schedule(20)
x0 = jax.random.normal(jax.random.key(0), (32, 3))
w = jnp.linspace(0.0, 1.0, 32)

def eps_loss(theta, key):
    return losses.denoising_loss_eps(lambda x, t: theta * x, schedule, key, x0, weights=w)

def x0_loss(theta, key):
    return losses.denoising_loss_x0(lambda y, s: theta * y, ve_schedule(8), key, x0, weights=w)

def issm_loss(theta, key):
    w, ess = losses.importance_weights(x0[:, 0] * theta, mode="normalized")  # no grad via w
    return losses.issm(lambda x, t: theta * x, schedule, key, x0, w,
                       time_weights=losses.paper_time_weights(schedule))

def check(fn, th, ks):
    return fn(th, ks[0]), jax.vmap(fn, in_axes=(None, 0))(th, ks), jax.grad(fn)(th, ks[0])

# One compiled program for everything keeps the fresh interpreter quick.
keys = jax.random.split(jax.random.key(1), 4)
results = jax.jit(lambda th, ks: [check(fn, th, ks) for fn in (eps_loss, x0_loss, issm_loss)])(0.5, keys)
for value, batch, grad in results:
    assert batch.shape == (4,)
    np.testing.assert_allclose(batch[0], value, rtol=1e-5)
    assert np.isfinite(grad) and abs(float(grad)) > 0
# the weights are data: the gradient is the one with the weights frozen at their value
w_fixed, _ = losses.importance_weights(x0[:, 0] * 0.5)
g_fixed = jax.jit(jax.grad(lambda th: losses.issm(lambda x, t: th * x, schedule, keys[0], x0,
    w_fixed, time_weights=losses.paper_time_weights(schedule))))(0.5)
np.testing.assert_allclose(results[2][2], g_fixed, rtol=1e-5)
errs = losses.per_sample_sq_error(x0, jnp.zeros_like(x0))
np.testing.assert_allclose(losses.weighted_sq_error_loss(x0, 0 * x0, w), losses.weighted_mean(errs, w), rtol=1e-6)
print("PUBLIC_LOSSES_OK")
"""


def test_public_losses_import_jit_vmap_grad_in_fresh_process():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "PUBLIC_LOSSES_OK" in result.stdout
