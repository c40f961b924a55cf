"""The runner: chunked scans over vmapped seeds, evaluation, checkpoints, sweeps, bench."""
