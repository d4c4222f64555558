"""Float32 and bfloat16 error bounds, so tolerances come from the computation (never fitted to one machine)."""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23, twice float32's unit roundoff


def gamma(n, eps=EPS32):
    """Higham's gamma_n = n eps / (1 - n eps), evaluated with eps = 2u (a factor-2 margin).

    |fl(sum_i a_i b_i) - sum_i a_i b_i| <= gamma_n * sum_i |a_i b_i| for an n-term float32 sum or dot
    product in ANY order and with or without FMA (Higham, Accuracy and Stability, eq. 3.5 with u), so
    the bound covers oneDNN's and Eigen's different blockings and ISAs alike; the factor 2 covers the
    roundings of inputs and products that the sum itself does not count.
    """
    if n * eps >= 1:
        raise ValueError(f"gamma_{n} is undefined in float32")
    return n * eps / (1 - n * eps)


def dot_error_bound(n, abs_sum, eps=EPS32):
    """The float32 error bound of an n-term dot product: gamma_n times sum |a_i||b_i| (elementwise)."""
    return gamma(n, eps) * np.asarray(abs_sum, np.float64)


BFLOAT16_UNIT = 2.0 ** -8  # bfloat16 keeps 8 significant bits: one rounding to nearest moves a value by <= 2^-8 of it


def tiny_bfloat16_rms(convs=18, roundings_per_conv=5):
    """The rms error of tiny's bfloat16 logits, as a fraction of the logits' scale (a statistical size).

    Tiny's deepest path has ~18 convs, each with up to 5 roundings to bfloat16: its input, its weights,
    its output, BN's output (a CPU's kernels may round BN's multiply and add apart) and the residual Add.
    Each moves a value by at most u = 2^-8 of itself (rms at most u/sqrt(3), uniform within ±u);
    independent, they add in quadrature to sqrt(18·5)·u/sqrt(3) ≈ 0.021. How many roundings really
    happen is the CPU's kernels' choice: 0.0095 was measured on an AMD Zen 4, 0.0185 on a CI machine.
    """
    return np.sqrt(convs * roundings_per_conv / 3) * BFLOAT16_UNIT
