"""Helpers shared by the sensor-network experiment scripts (training, JSON, Markdown)."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import jax
import numpy as np

from jaxdiff import statediff as sd

HERE = os.path.dirname(os.path.abspath(__file__))


def provenance() -> dict:
    """The commit (`git rev-parse --short HEAD`, "+uncommitted" when the tree is dirty) and the
    command line that produced a result file."""
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=HERE, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain"):
        commit += "+uncommitted"
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(os.path.dirname(HERE)))
    return {"commit": commit, "command": shlex.join(["python", script, *sys.argv[1:]])}


def train_model(key, rows, *, state_dim, width, steps, lr, batch_size=512, depth=3,
                cosine=False, label=""):
    """Fit the shared denoiser on per-agent rows; returns (model, params, info)."""
    hp = sd.make_hparams(state_dim, width=width, depth=depth, lr=lr,
                         cosine_steps=steps if cosine else None)
    start = time.time()
    params, metrics = sd.fit(key, hp, rows, num_steps=steps, batch_size=batch_size,
                             chunk=min(steps, 1000))
    loss = np.asarray(metrics["loss"])
    info = {
        "width": width, "depth": depth, "steps": steps, "lr": lr, "batch_size": batch_size,
        "params": sd.num_params(rows["tau"].shape[-1], state_dim, width, depth),
        "loss_first_100": float(loss[:100].mean()), "loss_last_500": float(loss[-500:].mean()),
        "train_s": round(time.time() - start, 1),
    }
    print(f"  trained {label} W={width}: {steps} steps in {info['train_s']} s, "
          f"loss {info['loss_first_100']:.3f} -> {info['loss_last_500']:.3f}", flush=True)
    return hp.model, params, info


def to_jsonable(x):
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return to_jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(to_jsonable(payload), fh, indent=1)
    print(f"wrote {path}")


def _cell(value) -> str:
    # A bare "|" (as in ||D||) ends a Markdown table cell; escape the ones not escaped yet.
    return re.sub(r"(?<!\\)\|", r"\\|", str(value))


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_figure(fig, path, dpi=70):
    """Save a matplotlib figure as a small (64-colour palette) PNG."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)
    print(f"wrote {path}")
