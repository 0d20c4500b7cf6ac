"""The analytic hierarchy process: priorities from a pairwise comparison matrix.

The priority vector is the principal right eigenvector of the matrix (power iteration), λmax
its eigenvalue, CI = (λmax - n)/(n - 1) and CR = CI/RI with Saaty's random index. A matrix with
CR > 0.10 is too inconsistent to use."""

from __future__ import annotations

from dataclasses import dataclass

# Saaty's random consistency index for n = 1 … 15.
RANDOM_INDEX = (
    0.0,
    0.0,
    0.58,
    0.90,
    1.12,
    1.24,
    1.32,
    1.41,
    1.45,
    1.49,
    1.51,
    1.48,
    1.56,
    1.57,
    1.59,
)
MAX_CR = 0.10


@dataclass(frozen=True, slots=True)
class AhpResult:
    weights: list[float]
    lambda_max: float
    ci: float
    cr: float
    # The judgement furthest from what the weights imply: (row, column, judged, implied).
    worst: tuple[int, int, float, float] | None

    @property
    def consistent(self) -> bool:
        return self.cr <= MAX_CR


def priorities(matrix: list[list[float]], *, tolerance: float = 1e-12) -> AhpResult:
    n = len(matrix)
    w = [1.0 / n] * n
    for _ in range(1000):
        nxt = [sum(matrix[i][j] * w[j] for j in range(n)) for i in range(n)]
        total = sum(nxt)
        nxt = [x / total for x in nxt]
        if max(abs(a - b) for a, b in zip(nxt, w, strict=True)) < tolerance:
            w = nxt
            break
        w = nxt
    aw = [sum(matrix[i][j] * w[j] for j in range(n)) for i in range(n)]
    lambda_max = sum(aw[i] / w[i] for i in range(n)) / n
    ci = (lambda_max - n) / (n - 1) if n > 1 else 0.0
    ri = RANDOM_INDEX[n - 1] if n <= len(RANDOM_INDEX) else RANDOM_INDEX[-1]
    cr = ci / ri if ri > 0 else 0.0
    worst = None
    worst_error = 1.0
    for i in range(n):
        for j in range(i + 1, n):
            implied = w[i] / w[j]
            error = max(matrix[i][j] / implied, implied / matrix[i][j])
            if error > worst_error:
                worst_error, worst = error, (i, j, matrix[i][j], implied)
    return AhpResult(w, lambda_max, max(ci, 0.0), max(cr, 0.0), worst)
