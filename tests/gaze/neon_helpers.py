"""Helpers of the Neon and screen-mapping tests: tracker settings for the fake, synthetic
scene frames of the screen seen through a distorting lens under a known homography."""

from __future__ import annotations

import time

import cv2
import numpy as np
from fake_neon import FakeNeon

from appliance.config import TrackerConfig
from appliance.gaze.screen_mapping import CameraModel

SCREEN_W, SCREEN_H = 1920, 1080
SCENE_W, SCENE_H = 1600, 1200


def tracker_config(fake: FakeNeon, **overrides: object) -> TrackerConfig:
    """A [tracker] section pointing at the fake, with test-sized timeouts."""
    values = dict(ip="127.0.0.1", port=fake.http_port, stall_timeout_s=0.5, reconnect_initial_s=0.1,
                  reconnect_max_s=0.5, time_echo_measurements=10, request_timeout_s=2.0)
    values.update(overrides)
    return TrackerConfig(**values)  # type: ignore[arg-type]


def collect(source, n, timeout_s=10.0):
    """Receive up to ``n`` samples (gives up after ``timeout_s``)."""
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        s = source.receive(0.5)
        if s is not None:
            out.append(s)
    return out


def wait_for(predicate, timeout_s=10.0):
    """Poll ``predicate`` until true; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def screen_image(markers: list) -> np.ndarray:
    """A dark 1920x1080 UI with the corner markers and some texture."""
    img = np.full((SCREEN_H, SCREEN_W), 40, np.uint8)
    cv2.circle(img, (960, 540), 300, 90, -1)
    for m in markers:
        h, w = m.image.shape
        img[m.y_px:m.y_px + h, m.x_px:m.x_px + w] = m.image
    return img


class SceneRenderer:
    """Renders what the scene camera sees: the screen under a known homography, distorted."""

    def __init__(self, camera: CameraModel) -> None:
        self.camera = camera
        self.w, self.h = camera.resolution
        ys, xs = np.mgrid[0:self.h, 0:self.w].astype(np.float64)
        grid = np.c_[xs.ravel(), ys.ravel()]
        self._undist = camera.undistort_points(grid).reshape(self.h, self.w, 2)

    def render(self, screen: np.ndarray, h_screen_to_scene: np.ndarray) -> np.ndarray:
        """The distorted scene frame (grey uint8) seeing ``screen`` under the homography."""
        inv = np.linalg.inv(h_screen_to_scene)
        pts = cv2.perspectiveTransform(self._undist.reshape(-1, 1, 2), inv).reshape(self.h, self.w, 2)
        return cv2.remap(screen, pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=128)


def pose(dst: list) -> np.ndarray:
    """Homography screen px -> undistorted scene px sending the screen corners to ``dst``."""
    src = np.float32([[0, 0], [SCREEN_W - 1, 0], [SCREEN_W - 1, SCREEN_H - 1], [0, SCREEN_H - 1]])
    return cv2.getPerspectiveTransform(src, np.float32(dst)).astype(np.float64)
