"""The batched Kalman filter against hand-computed steps and a per-track Cholesky reference."""

from __future__ import annotations

import numpy as np
import pytest

from omc.runtime.kalman import KalmanFilter, KalmanNoise

scipy_linalg = pytest.importorskip("scipy.linalg")

KF = KalmanFilter()


def test_initiate_by_hand():
    mean, cov = KF.initiate(np.array([[100.0, 200.0, 0.5, 100.0]]))
    np.testing.assert_array_equal(mean, [[100, 200, 0.5, 100, 0, 0, 0, 0]])
    # std: x, y, h: 2 * (1/20) * 100 = 10 -> 100; a: 1e-2 -> 1e-4;
    # velocities: 10 * (1/160) * 100 = 6.25 -> 39.0625; aspect velocity 1e-5 -> 1e-10.
    np.testing.assert_allclose(np.diag(cov[0]), [100, 100, 1e-4, 100, 39.0625, 39.0625, 1e-10, 39.0625], rtol=1e-12)
    assert np.count_nonzero(cov[0] - np.diag(np.diag(cov[0]))) == 0


def test_predict_and_update_by_hand():
    mean, cov = KF.initiate(np.array([[100.0, 200.0, 0.5, 100.0]]))
    mean, cov = KF.predict(mean, cov)
    # Zero velocity: the mean stays. var(x) = 100 + 39.0625 (velocity) + (100 / 20)^2 = 164.0625;
    # cov(x, vx) = 39.0625; var(vx) = 39.0625 + (100 / 160)^2 = 39.453125; var(a) = 1e-4 + 1e-10 + 1e-4.
    np.testing.assert_array_equal(mean[0, :4], [100, 200, 0.5, 100])
    assert cov[0, 0, 0] == pytest.approx(164.0625)
    assert cov[0, 0, 4] == pytest.approx(39.0625)
    assert cov[0, 4, 4] == pytest.approx(39.453125)
    assert cov[0, 2, 2] == pytest.approx(2.000001e-4)
    # Measure x 10 px to the right. S_xx = 164.0625 + (100 / 20)^2 = 189.0625;
    # x += 10 * 164.0625 / 189.0625 = 8.6777; vx = 10 * 39.0625 / 189.0625 = 2.0661; y, a, h unchanged.
    new_mean, new_cov = KF.update(mean, cov, np.array([[110.0, 200.0, 0.5, 100.0]]))
    assert new_mean[0, 0] == pytest.approx(100 + 10 * 164.0625 / 189.0625)
    assert new_mean[0, 4] == pytest.approx(10 * 39.0625 / 189.0625)
    np.testing.assert_allclose(new_mean[0, [1, 2, 3, 5, 6, 7]], [200, 0.5, 100, 0, 0, 0], atol=1e-12)
    # var(x) = 164.0625 - 164.0625^2 / 189.0625 (= 164.0625 * 25 / 189.0625).
    assert new_cov[0, 0, 0] == pytest.approx(164.0625 * 25 / 189.0625)


def _slow_update(kf, mean, cov, z):
    """Per-track update through a Cholesky factorisation (the reference's route)."""
    h = np.eye(4, 8)
    std = [kf.noise.position_weight * mean[3]] * 2 + [kf.noise.measurement_aspect_std, kf.noise.position_weight * mean[3]]
    s = h @ cov @ h.T + np.diag(np.square(std))
    factor = scipy_linalg.cho_factor(s, lower=True)
    gain = scipy_linalg.cho_solve(factor, (cov @ h.T).T).T
    return mean + gain @ (z - h @ mean), cov - gain @ s @ gain.T, s


def _random_states(rng, t):
    meas = np.c_[rng.uniform(0, 1000, (t, 2)), rng.uniform(0.3, 0.6, t), rng.uniform(50, 300, t)]
    mean, cov = KF.initiate(meas)
    mean[:, 4:] = rng.normal(0, 2, (t, 4)) * [1, 1, 1e-3, 1]
    for _ in range(3):
        mean, cov = KF.predict(mean, cov)
    return mean, cov


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_update_and_gating_match_per_track_reference(seed):
    rng = np.random.default_rng(seed)
    mean, cov = _random_states(rng, 12)
    z = mean[:, :4] + rng.normal(0, 3, (12, 4)) * [1, 1, 0.01, 1]
    new_mean, new_cov = KF.update(mean, cov, z)
    dets = mean[rng.integers(0, 12, 7), :4] + rng.normal(0, 5, (7, 4)) * [1, 1, 0.01, 1]
    maha = KF.gating_distance(mean, cov, dets)
    assert maha.shape == (12, 7)
    for i in range(12):
        m, c, s = _slow_update(KF, mean[i], cov[i], z[i])
        np.testing.assert_allclose(new_mean[i], m, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(new_cov[i], c, rtol=1e-9, atol=1e-9)
        lower = np.linalg.cholesky(s)
        zz = scipy_linalg.solve_triangular(lower, (dets - mean[i, :4]).T, lower=True)
        np.testing.assert_allclose(maha[i], np.sum(zz * zz, axis=0), rtol=1e-9)


def test_batched_predict_matches_one_by_one():
    rng = np.random.default_rng(3)
    mean, cov = _random_states(rng, 5)
    batch_mean, batch_cov = KF.predict(mean, cov)
    for i in range(5):
        m, c = KF.predict(mean[i : i + 1], cov[i : i + 1])
        np.testing.assert_array_equal(batch_mean[i], m[0])
        np.testing.assert_allclose(batch_cov[i], c[0], rtol=1e-15)


def test_inputs_are_not_modified_and_empties_work():
    rng = np.random.default_rng(4)
    mean, cov = _random_states(rng, 3)
    keep = mean.copy(), cov.copy()
    KF.update(mean, cov, mean[:, :4] + 1)
    KF.predict(mean, cov)
    np.testing.assert_array_equal(mean, keep[0])
    np.testing.assert_array_equal(cov, keep[1])
    assert KF.gating_distance(mean, cov, np.zeros((0, 4))).shape == (3, 0)
    assert KF.gating_distance(np.zeros((0, 8)), np.zeros((0, 8, 8)), np.zeros((2, 4))).shape == (0, 2)


def test_noise_weights_come_from_the_noise_model():
    doubled = KalmanFilter(KalmanNoise(position_weight=2 / 20))
    _, cov = doubled.initiate(np.array([[0.0, 0.0, 0.5, 100.0]]))
    assert cov[0, 0, 0] == pytest.approx((2 * 0.1 * 100) ** 2)
