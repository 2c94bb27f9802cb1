"""Fixtures of the Neon and screen-mapping tests: the fake Neon on loopback, the scene camera,
the corner markers and a renderer of synthetic scene frames (helpers in ``neon_helpers``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_neon import NEON_SCENE_D, NEON_SCENE_K, FakeNeon  # noqa: E402
from neon_helpers import SCENE_H, SCENE_W, SCREEN_H, SCREEN_W, SceneRenderer  # noqa: E402

from appliance.gaze.screen_mapping import CameraModel, screen_markers  # noqa: E402


@pytest.fixture
def fake_neon() -> Iterator[FakeNeon]:
    """A fake Companion whose clock runs 3.25 s ahead of the host's."""
    fake = FakeNeon(rate_hz=200.0, clock_offset_s=3.25).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def neon_camera() -> CameraModel:
    """The fake Neon's scene camera (Neon-like 8-coefficient distortion)."""
    return CameraModel(NEON_SCENE_K.copy(), NEON_SCENE_D.copy(), (SCENE_W, SCENE_H))


@pytest.fixture(scope="session")
def scene_renderer(neon_camera: CameraModel) -> SceneRenderer:
    return SceneRenderer(neon_camera)


@pytest.fixture(scope="session")
def corner_markers() -> list:
    return screen_markers(SCREEN_W, SCREEN_H, size_px=160, margin_px=8)
