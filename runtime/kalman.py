"""The JDE/DeepSORT constant-velocity Kalman filter over boxes, batched over tracks.

State (8): x, y, a, h, vx, vy, va, vh: centre, aspect ratio w / h, height and their velocities,
frame pixels per frame. Measurement (4): x, y, a, h. The filter is a stateless model: each call
takes stacked means [T, 8] and covariances [T, 8, 8] and returns new arrays, so the tracker runs
one call per association step for all its tracks (no per-track Python arithmetic).

Noise (omc-reference.md 4.5): standard deviations proportional to the box height, with the
weights of `KalmanNoise`; the aspect ratio gets small constant deviations instead.

Everything runs in float64, as the reference does (its boxes become float64 before they reach
the filter). This is not a luxury: the covariance update P - K S K^T cancels most of its digits,
the squared Mahalanobis distance enters the association cost and its gate, and the output boxes
are read from the filter's mean; float32 would move decisions near the gate and boxes by more
than the parity tolerance over a few hundred frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Float64Array = npt.NDArray[np.float64]

STATE_DIM = 8
MEASURE_DIM = 4


@dataclass(frozen=True)
class KalmanNoise:
    """Noise model of the JDE Kalman filter (omc-reference.md 4.5; JDE's kalman_filter.py).

    Position deviations are `position_weight * h`, velocity deviations `velocity_weight * h`.
    """

    # Std of x, y, h per unit of box height.
    position_weight: float = 1.0 / 20
    # Std of the x, y, h velocities per unit of box height.
    velocity_weight: float = 1.0 / 160
    # A new track's x, y, h std is this many position weights; its velocity std this many velocity weights.
    initial_position_factor: float = 2.0
    initial_velocity_factor: float = 10.0
    # Aspect-ratio std: initial and process noise of a, of its velocity, and measurement noise of a.
    initial_aspect_std: float = 1e-2
    initial_aspect_velocity_std: float = 1e-5
    process_aspect_std: float = 1e-2
    process_aspect_velocity_std: float = 1e-5
    measurement_aspect_std: float = 1e-1


def _height_scaled_diagonal(
    heights: Float64Array, stds: tuple[float, ...], height_scaled: tuple[bool, ...]
) -> Float64Array:
    """[T, D, D] diagonal matrices of squared stds; entries flagged `height_scaled` are multiplied by h."""
    std = np.array(stds, np.float64)[None, :] * np.where(height_scaled, heights[:, None], 1.0)
    dim = len(stds)
    out = np.zeros((len(heights), dim, dim), np.float64)
    out.reshape(len(heights), dim * dim)[:, :: dim + 1] = np.square(std)  # the diagonals, as one strided view
    return out


class MeasurementSpace(NamedTuple):
    """States seen by the measurement: mean [T, 4] (x, y, a, h), innovation covariance S [T, 4, 4]
    (measurement noise included) and its inverse [T, 4, 4], float64.

    One projection serves the gating distances and every later update of the same predicted
    states (`KalmanFilter.gating_distance_in`, `update_in`), so S is inverted once per frame.
    """

    mean: Float64Array
    covariance: Float64Array
    inverse: Float64Array

    def take(self, rows: npt.NDArray[np.int64]) -> "MeasurementSpace":
        """The states at `rows` (int [k])."""
        return MeasurementSpace(self.mean[rows], self.covariance[rows], self.inverse[rows])


class KalmanFilter:
    """Batched constant-velocity Kalman filter; holds only the model matrices and noise weights."""

    def __init__(self, noise: KalmanNoise = KalmanNoise()) -> None:
        self.noise = noise
        self.motion = np.eye(STATE_DIM)
        self.motion[:MEASURE_DIM, MEASURE_DIM:] = np.eye(MEASURE_DIM)  # x += v, one frame per step
        # Which of (x, y, a, h) have height-proportional noise: all but the aspect ratio.
        self._scaled4 = (True, True, False, True)

    def initiate(self, measurements: Float64Array) -> tuple[Float64Array, Float64Array]:
        """New states from [N, 4] xyah measurements: mean [N, 8] (zero velocity), covariance [N, 8, 8]."""
        measurements = np.asarray(measurements, np.float64).reshape(-1, MEASURE_DIM)
        n = self.noise
        mean = np.concatenate([measurements, np.zeros_like(measurements)], axis=1)
        pos = n.initial_position_factor * n.position_weight
        vel = n.initial_velocity_factor * n.velocity_weight
        stds = (pos, pos, n.initial_aspect_std, pos, vel, vel, n.initial_aspect_velocity_std, vel)
        cov = _height_scaled_diagonal(measurements[:, 3], stds, self._scaled4 + self._scaled4)
        return mean, cov

    def predict(self, mean: Float64Array, covariance: Float64Array) -> tuple[Float64Array, Float64Array]:
        """One step ahead for [T, 8] means and [T, 8, 8] covariances; returns new arrays.

        Process noise is scaled by each track's current height mean[:, 3].
        """
        n = self.noise
        stds = (
            n.position_weight, n.position_weight, n.process_aspect_std, n.position_weight,
            n.velocity_weight, n.velocity_weight, n.process_aspect_velocity_std, n.velocity_weight,
        )  # fmt: skip
        process = _height_scaled_diagonal(mean[:, 3], stds, self._scaled4 + self._scaled4)
        new_mean = mean @ self.motion.T
        new_cov = self.motion @ covariance @ self.motion.T + process
        return new_mean, new_cov

    def project(self, mean: Float64Array, covariance: Float64Array) -> tuple[Float64Array, Float64Array]:
        """Measurement-space mean [T, 4] and innovation covariance [T, 4, 4] (with measurement noise)."""
        n = self.noise
        stds = (n.position_weight, n.position_weight, n.measurement_aspect_std, n.position_weight)
        noise = _height_scaled_diagonal(mean[:, 3], stds, self._scaled4)
        # The observation matrix H = [I4 0] picks the first four state entries: slices, not products.
        projected_mean = mean[:, :MEASURE_DIM]
        projected_cov = covariance[:, :MEASURE_DIM, :MEASURE_DIM] + noise
        return projected_mean, projected_cov

    def measurement_space(self, mean: Float64Array, covariance: Float64Array) -> MeasurementSpace:
        """`project` plus the inverse of S, for [T, 8] means and [T, 8, 8] covariances."""
        projected_mean, projected_cov = self.project(mean, covariance)
        # S is a 4x4 symmetric positive definite matrix whose diagonal is at least the measurement
        # noise, so its explicit inverse is accurate to ~1e-12 relative; NumPy's batched solve with
        # several right-hand sides costs 3-6 times more per frame, and the inverse is shared by the
        # gating and the updates of a frame.
        inverse = np.linalg.inv(projected_cov).astype(np.float64, copy=False)
        return MeasurementSpace(projected_mean, projected_cov, inverse)

    def update(
        self, mean: Float64Array, covariance: Float64Array, measurements: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """Correct [T, 8] / [T, 8, 8] states with one [T, 4] xyah measurement each; returns new arrays."""
        return self.update_in(self.measurement_space(mean, covariance), mean, covariance, measurements)

    def update_in(
        self, space: MeasurementSpace, mean: Float64Array, covariance: Float64Array, measurements: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """`update` with the states' measurement space already computed (`measurement_space` of the
        same [T, 8] means and [T, 8, 8] covariances); measurements [T, 4] xyah. Returns new arrays."""
        gain = covariance[:, :, :MEASURE_DIM] @ space.inverse  # Kalman gain P H^T S^-1, [T, 8, 4]
        innovation = np.asarray(measurements, np.float64) - space.mean  # [T, 4]
        new_mean = mean + np.einsum("tij,tj->ti", gain, innovation)
        new_cov = covariance - gain @ space.covariance @ np.swapaxes(gain, 1, 2)
        return new_mean, new_cov

    def gating_distance(
        self, mean: Float64Array, covariance: Float64Array, measurements: Float64Array
    ) -> Float64Array:
        """Squared Mahalanobis distance of every measurement to every track, over all 4 dimensions.

        mean [T, 8], covariance [T, 8, 8], measurements [D, 4] xyah. Returns [T, D] float64;
        compare with the chi-square quantile for 4 degrees of freedom.
        """
        return self.gating_distance_in(self.measurement_space(mean, covariance), measurements)

    def gating_distance_in(self, space: MeasurementSpace, measurements: Float64Array) -> Float64Array:
        """`gating_distance` of the states whose measurement space is `space` ([T] states) to
        [D, 4] xyah measurements. Returns [T, D] float64."""
        measurements = np.asarray(measurements, np.float64).reshape(-1, MEASURE_DIM)
        if len(space.mean) == 0 or len(measurements) == 0:
            return np.zeros((len(space.mean), len(measurements)), np.float64)
        delta = measurements[None, :, :] - np.ascontiguousarray(space.mean)[:, None, :]  # [T, D, 4]
        # d^T S^-1 d with the explicit inverse of the well-conditioned 4x4 S (see `measurement_space`);
        # the reference's Cholesky route agrees to ~1e-12 relative.
        weighted = delta @ space.inverse  # [T, D, 4]
        return np.einsum("tdk,tdk->td", weighted, delta)
