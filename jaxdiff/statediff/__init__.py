"""State reconstruction under partial observability with history-conditioned blind denoisers
(paper 000, spec-state-diffusion): the shared denoiser f_theta(tau_i, y), Eq. 1 training,
individual / composite / partial-composite inference with the Step-2 acceptance checks, and
the analysis metrics (PSNR, deviation, Jacobian rank, surrogate bound R_eps).

No RL here: an algorithm wrapper scans `train_step`; the diffusion primitives it builds on
(flows, fixed points, Jacobians, ranks) live in `jaxdiff.diffusion`.
"""
from jaxdiff.statediff.denoiser import (
    Denoiser,
    analytic_blind_denoiser,
    denoise_fn,
    first_layer_blocks,
    init_params,
    num_params,
)
from jaxdiff.statediff.infer import (
    CompositeResult,
    DeviationBound,
    active_order,
    attractors,
    composite_algorithm,
    composite_estimate,
    converge,
    deviation,
    deviation_bound,
    individual_estimates,
)
from jaxdiff.statediff.metrics import (
    aggregate_psnr,
    jacobian_distances,
    jacobian_ranks,
    local_regression_residual,
    mean_psnr,
    psnr,
    regression_residual,
    regression_residual_lstsq,
    span_rank,
    spearman,
    surrogate_bound,
)
from jaxdiff.statediff.train import (
    TrainHParams,
    fit,
    init,
    loss_fn,
    make_hparams,
    make_optimizer,
    per_sample_errors,
    row_sampler,
    train,
    train_step,
)

__all__ = [
    "CompositeResult", "Denoiser", "DeviationBound", "TrainHParams", "active_order",
    "aggregate_psnr", "analytic_blind_denoiser", "attractors", "composite_algorithm",
    "composite_estimate", "converge", "denoise_fn", "deviation", "deviation_bound",
    "first_layer_blocks", "fit", "individual_estimates", "init", "init_params",
    "jacobian_distances", "jacobian_ranks", "local_regression_residual", "loss_fn",
    "make_hparams", "make_optimizer", "mean_psnr", "num_params", "per_sample_errors", "psnr",
    "regression_residual", "regression_residual_lstsq", "row_sampler", "span_rank", "spearman",
    "surrogate_bound", "train", "train_step",
]
