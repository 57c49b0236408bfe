"""Whether two configs' means over training seeds differ by more than the seeds' noise: Welch's t-interval.
(analysis/noise.py answers another question: the noise of one run's val CER over its validation clips.)

`welch_within_noise(a, b)` is True when the 95% Welch t-interval of mean(a) - mean(b) contains 0:
|mean(a) - mean(b)| <= t(0.975, nu) * sqrt(var(a)/n_a + var(b)/n_b), sample variances (ddof 1) and nu by
Welch-Satterthwaite. Student's t quantile is computed here (the regularized incomplete beta function by its
continued fraction), so no SciPy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_EPS = 1e-14
_TINY = 1e-300


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # fmt: skip
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom, t >= 0."""
    return 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p in [0.5, 1)) of Student's t with `df` degrees of freedom, by bisection."""
    if not 0.5 <= p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df > 0, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while t_tail(hi, df) > 1.0 - p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_tail(mid, df) > 1.0 - p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for fewer than two values)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def welch_half_width(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the `level` Welch t-interval of mean(a) - mean(b) (0 when both samples are constant)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Welch interval needs at least two values on each side")
    va, vb = mean_std(a)[1] ** 2 / len(a), mean_std(b)[1] ** 2 / len(b)
    se2 = va + vb
    if se2 == 0.0:
        return 0.0
    df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t_quantile(0.5 + level / 2.0, df) * math.sqrt(se2)


def welch_within_noise(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> bool:
    """True when the `level` Welch t-interval of mean(a) - mean(b) contains 0."""
    return abs(mean_std(a)[0] - mean_std(b)[0]) <= welch_half_width(a, b, level)
