"""Scene camera -> screen mapping with AprilTag (tag36h11) markers at the screen corners.

The eye tracker reports gaze in its scene camera's pixels. The UI draws four AprilTags at
the screen corners (:func:`screen_markers`); each scene frame is searched for them with
OpenCV's ``cv2.aruco`` AprilTag dictionary (``pupil-apriltags`` has no aarch64 wheel), the
marker corners are undistorted with the scene camera's calibration (Neon serves it as
``/calibration.bin``; Pupil Invisible uses its published default intrinsics), and a
homography from undistorted scene px to screen px is fitted per frame. Each gaze sample is
mapped with the homography of the frame nearest in time; when that frame did not locate the
screen, or no frame is near enough, the sample is *unmapped* (None), never guessed.

Coordinates: screen px and scene px follow OpenCV's convention (pixel centres at integers).
"""

from __future__ import annotations

import bisect
import logging
import struct
import threading
import urllib.request
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from appliance.errors import GazeError

logger = logging.getLogger(__name__)

TAG_FAMILY = cv2.aruco.DICT_APRILTAG_36h11
TAG_MODULES = 8  # tag36h11 with its one-module black border: 8x8 modules
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)

# Neon /calibration.bin: one record, little-endian (Pupil Labs' neon_recording.calib layout).
NEON_CALIBRATION_DTYPE = np.dtype([
    ("version", "u1"), ("serial", "S6"),
    ("scene_camera_matrix", "<f8", (3, 3)), ("scene_distortion_coefficients", "<f8", (8,)),
    ("scene_extrinsics_affine_matrix", "<f8", (4, 4)),
    ("right_camera_matrix", "<f8", (3, 3)), ("right_distortion_coefficients", "<f8", (8,)),
    ("right_extrinsics_affine_matrix", "<f8", (4, 4)),
    ("left_camera_matrix", "<f8", (3, 3)), ("left_distortion_coefficients", "<f8", (8,)),
    ("left_extrinsics_affine_matrix", "<f8", (4, 4)),
    ("crc", "<u4"),
])


@dataclass(frozen=True)
class CameraModel:
    """Pinhole + radial-tangential (8-coefficient rational) scene camera model.

    Attributes
    ----------
    camera_matrix
        3×3 float64 intrinsics K (scene px).
    dist_coeffs
        (8,) float64 OpenCV coefficients k1 k2 p1 p2 k3 k4 k5 k6.
    resolution
        (width, height) of the scene frames in px.
    """

    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray
    resolution: tuple[int, int]

    def undistort_points(self, points: np.ndarray) -> np.ndarray:
        """Map distorted scene px (N×2) to ideal pinhole px with the same K (N×2 float64)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
        out = cv2.undistortPoints(pts, self.camera_matrix, self.dist_coeffs, None, self.camera_matrix,
                                  criteria=_UNDISTORT_CRITERIA)
        return out.reshape(-1, 2)

    def distort_points(self, points: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`undistort_points`: ideal px (N×2) to distorted scene px."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        k_inv = np.linalg.inv(self.camera_matrix)
        rays = (k_inv @ np.c_[pts, np.ones(len(pts))].T).T
        out, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                                   self.camera_matrix, self.dist_coeffs)
        return out.reshape(-1, 2)


# Pupil Invisible scene camera ("PI world v1", 1088x1080): Pupil Labs' published defaults.
INVISIBLE_SCENE_CAMERA = CameraModel(
    camera_matrix=np.array([[766.2927454396544, 0.0, 543.6272327745995],
                            [0.0, 766.3976103393867, 566.0580149497666],
                            [0.0, 0.0, 1.0]]),
    dist_coeffs=np.array([-0.12390715699556255, 0.09983010007937897, 0.0013846287331131738,
                          -0.00036539454816030264, 0.020072404577046853, 0.2052173022520547,
                          0.009921380887245364, 0.06631870205961587]),
    resolution=(1088, 1080),
)
NEON_SCENE_RESOLUTION = (1600, 1200)


def parse_calibration_bin(data: bytes) -> CameraModel:
    """Parse a Neon ``/calibration.bin`` into the scene camera model.

    Raises
    ------
    GazeError
        If the size is not one calibration record or the matrix is not a camera matrix.
    """
    if len(data) != NEON_CALIBRATION_DTYPE.itemsize:
        raise GazeError(f"calibration.bin has {len(data)} bytes; a Neon record has "
                        f"{NEON_CALIBRATION_DTYPE.itemsize}.")
    rec = np.frombuffer(data, dtype=NEON_CALIBRATION_DTYPE)[0]
    crc = struct.unpack("<I", data[-4:])[0]
    if zlib.crc32(data[:-4]) != crc:
        # The CRC's exact coverage is undocumented: a mismatch is logged, the matrix checked.
        logger.warning("calibration.bin CRC does not match CRC32 of its body.")
    k = np.array(rec["scene_camera_matrix"], dtype=np.float64)
    if not (k[0, 0] > 0 and k[1, 1] > 0 and np.allclose(k[2], [0, 0, 1])):
        raise GazeError("calibration.bin does not hold a valid scene camera matrix.")
    return CameraModel(k, np.array(rec["scene_distortion_coefficients"], dtype=np.float64),
                       NEON_SCENE_RESOLUTION)


def fetch_calibration(address: str, port: int, timeout_s: float = 3.0) -> CameraModel:
    """Download and parse ``http://address:port/calibration.bin`` (Neon only).

    Raises
    ------
    GazeError
        If the device does not serve it (Pupil Invisible) or it is malformed.
    """
    url = f"http://{address}:{port}/calibration.bin"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http by design)
            return parse_calibration_bin(resp.read())
    except OSError as exc:
        raise GazeError(f"No camera calibration at {url}: {exc}") from exc


@dataclass(frozen=True)
class MarkerPlacement:
    """One marker the UI draws.

    Attributes
    ----------
    marker_id
        tag36h11 id.
    x_px, y_px
        Screen position (top-left) of the image, quiet zone included.
    image
        uint8 H×W grey image (white quiet zone of one module, then the tag).
    corners_screen
        4×2 float64 screen coordinates of the tag's outer corners in the order the detector
        reports them (top-left, top-right, bottom-right, bottom-left).
    """

    marker_id: int
    x_px: int
    y_px: int
    image: np.ndarray
    corners_screen: np.ndarray

    def png(self) -> bytes:
        """The marker image encoded as PNG."""
        ok, buf = cv2.imencode(".png", self.image)
        if not ok:
            raise GazeError("Could not encode a marker image.")
        return buf.tobytes()


def screen_markers(width_px: int, height_px: int, size_px: int = 160, margin_px: int = 8,
                   ids: Sequence[int] = (0, 1, 2, 3)) -> list[MarkerPlacement]:
    """Return the four corner markers (top-left, top-right, bottom-right, bottom-left).

    Each image is exactly ``size_px`` square: the tag (8 modules of ``size_px // 10`` px)
    centred in a white quiet zone of at least one module. ``margin_px`` is the gap between
    the image and the screen edges.
    """
    if len(ids) != 4:
        raise ValueError("Exactly four marker ids are needed, one per screen corner.")
    module = size_px // (TAG_MODULES + 2)
    if module < 2:
        raise ValueError("Markers must be at least 20 px so each module is 2 px or more.")
    tag_px = module * TAG_MODULES
    pad = (size_px - tag_px) // 2
    if 2 * (size_px + margin_px) > min(width_px, height_px):
        raise ValueError("The markers do not fit on the screen.")
    dictionary = cv2.aruco.getPredefinedDictionary(TAG_FAMILY)
    far_x, far_y = width_px - margin_px - size_px, height_px - margin_px - size_px
    spots = [(margin_px, margin_px), (far_x, margin_px), (far_x, far_y), (margin_px, far_y)]
    out = []
    for marker_id, (x0, y0) in zip(ids, spots):
        image = np.full((size_px, size_px), 255, np.uint8)
        image[pad:pad + tag_px, pad:pad + tag_px] = cv2.aruco.generateImageMarker(
            dictionary, int(marker_id), tag_px, borderBits=1)
        a, b = x0 + pad - 0.5, y0 + pad - 0.5  # pixel edges, centres at integers
        corners = np.array([[a, b], [a + tag_px, b], [a + tag_px, b + tag_px], [a, b + tag_px]])
        out.append(MarkerPlacement(int(marker_id), x0, y0, image, corners))
    return out


def marker_png(marker_id: int, size_px: int = 160) -> bytes:
    """PNG of corner marker ``marker_id`` (0-3: top-left, top-right, bottom-right, bottom-left),
    quiet zone included, exactly as :func:`screen_markers` lays it out.

    The UI must draw it unscaled (``size_px`` screen px) at the placement's ``x_px``,
    ``y_px`` (``[tracker] marker_margin_px`` from the corners); the homography assumes it.
    """
    if not 0 <= marker_id <= 3:
        raise ValueError("Corner marker ids are 0 (top-left) to 3 (bottom-left).")
    placement = screen_markers(4 * size_px, 4 * size_px, size_px, 0)[marker_id]
    return placement.png()


# The AprilTag corner refinement reports corners with pixel *edges* at integers (measured on
# synthetic frames: +0.50 px in x and y against the true corners, where SUBPIX left 1-2.7 px
# errors on 5 px modules and CONTOUR pulled every corner 0.5 px inwards); we use OpenCV's
# pixel-centre convention everywhere, so the offset is removed.
_APRILTAG_CORNER_SHIFT_PX = 0.5
#: A scene frame stamped this much before the newest is a clock step, not a late frame, ns.
TIME_BASE_STEP_NS = 1_000_000_000


def make_detector() -> Any:
    """An ``ArucoDetector`` for tag36h11 with the AprilTag corner refinement."""
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_APRILTAG
    return cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(TAG_FAMILY), params)


class ScreenMapper:
    """Per-frame homographies (undistorted scene px -> screen px) and time-matched mapping.

    Thread-safe: frames are added from a decoder thread, gaze mapped from the tracker loop.

    Parameters
    ----------
    camera
        The scene camera model.
    markers
        The placements the UI draws (their ids and screen corners).
    max_frame_gap_ns
        A gaze sample farther than this from every frame is unmapped.
    min_markers
        Markers a frame must show to locate the screen. Three: one marker's corners
        extrapolate badly to the far side, and two on the same screen edge are nearly
        collinear (measured: 118 px error across a 1920 px screen).
    history
        Frames kept (about a second at 30 Hz is plenty).
    """

    def __init__(self, camera: CameraModel, markers: Sequence[MarkerPlacement],
                 max_frame_gap_ns: int = 100_000_000, min_markers: int = 3, history: int = 64) -> None:
        self.camera = camera
        self._corners = {m.marker_id: m.corners_screen for m in markers}
        self.max_frame_gap_ns = int(max_frame_gap_ns)
        self.min_markers = max(1, int(min_markers))
        self._detector = make_detector()
        self._lock = threading.Lock()
        self._times: deque = deque(maxlen=history)
        self._homs: deque = deque(maxlen=history)
        self.frames = 0
        self.located = 0
        self.last_marker_ids: tuple[int, ...] = ()
        self._last_found: dict[int, np.ndarray] = {}

    def detect(self, frame: np.ndarray) -> dict[int, np.ndarray]:
        """Return {marker id: 4×2 distorted scene px corners} of the known markers in a frame.

        Markers move little between frames at 30 Hz, so the search first runs only in
        windows around where each marker was last seen (about 5x faster than the whole
        1600x1200 frame); the whole frame is searched when any marker is not found there.
        """
        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        last = self._last_found
        if last:
            found: dict[int, np.ndarray] = {}
            height, width = grey.shape
            for marker_id, quad in last.items():
                lo, hi = quad.min(axis=0), quad.max(axis=0)
                grow = 0.6 * (hi - lo).max() + 16
                x0, y0 = (max(0, int(v - grow)) for v in lo)
                x1, y1 = int(min(width, hi[0] + grow)), int(min(height, hi[1] + grow))
                got = self._detect_in(grey[y0:y1, x0:x1])
                if marker_id in got:
                    found[marker_id] = got[marker_id] + (x0, y0)
            if len(found) == len(last) == len(self._corners):
                self._last_found = found
                return found
        found = self._detect_in(grey)
        self._last_found = found
        return found

    def _detect_in(self, grey: np.ndarray) -> dict[int, np.ndarray]:
        corners, ids, _ = self._detector.detectMarkers(np.ascontiguousarray(grey))
        found: dict[int, np.ndarray] = {}
        if ids is not None:
            for c, i in zip(corners, ids.ravel()):
                if int(i) in self._corners:
                    found[int(i)] = c.reshape(4, 2).astype(np.float64) - _APRILTAG_CORNER_SHIFT_PX
        return found

    def homography_from(self, found: dict[int, np.ndarray]) -> Optional[np.ndarray]:
        """Fit undistorted scene px -> screen px from detected corners, or None if too few."""
        if len(found) < self.min_markers:
            return None
        src = self.camera.undistort_points(np.concatenate([found[i] for i in sorted(found)]))
        dst = np.concatenate([self._corners[i] for i in sorted(found)])
        h, _ = cv2.findHomography(src, dst, 0)
        return h

    def add_frame(self, timestamp_ns: int, frame: np.ndarray) -> Optional[np.ndarray]:
        """Detect markers in one scene frame (grey or BGR uint8) taken at ``timestamp_ns``."""
        found = self.detect(frame)
        h = self.homography_from(found)
        self.add_homography(timestamp_ns, h)
        self.last_marker_ids = tuple(sorted(found))
        logger.debug("Scene frame %d: markers %s, located=%s", timestamp_ns, sorted(found), h is not None)
        return h

    def add_homography(self, timestamp_ns: int, homography: Optional[np.ndarray]) -> None:
        """Record a frame's homography (None: the screen was not located in that frame).

        A frame more than :data:`TIME_BASE_STEP_NS` older than the newest starts a new time
        base (the phone's clock stepped back, or its offset was re-estimated): ignoring it as
        late left the screen unlocated until the clock caught up with the old stamps.
        """
        with self._lock:
            if self._times and timestamp_ns < self._times[-1] - TIME_BASE_STEP_NS:
                logger.warning("Scene frame stamps stepped back %.3f s; frames before are dropped.",
                               (self._times[-1] - timestamp_ns) / 1e9)
                self._times.clear()
                self._homs.clear()
            if self._times and timestamp_ns <= self._times[-1]:
                return  # frames arrive in order; a repeat or a late one is ignored
            self._times.append(int(timestamp_ns))
            self._homs.append(None if homography is None else np.asarray(homography, np.float64))
            self.frames += 1
            self.located += homography is not None

    def homography_at(self, timestamp_ns: int) -> Optional[np.ndarray]:
        """The homography of the frame nearest in time, or None (unlocated or too far)."""
        with self._lock:
            if not self._times:
                return None
            times = list(self._times)
            j = bisect.bisect_left(times, timestamp_ns)
            best = min((k for k in (j - 1, j) if 0 <= k < len(times)),
                       key=lambda k: abs(times[k] - timestamp_ns))
            if abs(times[best] - timestamp_ns) > self.max_frame_gap_ns:
                return None
            return self._homs[best]

    def map(self, timestamp_ns: int, x: float, y: float) -> Optional[tuple[float, float]]:
        """Map one gaze point (distorted scene px) to screen px, or None when unmapped."""
        h = self.homography_at(timestamp_ns)
        if h is None or not (np.isfinite(x) and np.isfinite(y)):
            return None
        u = self.camera.undistort_points(np.array([[x, y]]))
        s = cv2.perspectiveTransform(u.reshape(1, 1, 2), h).reshape(2)
        return float(s[0]), float(s[1])


ScreenToImage = Callable[[float, float], Optional[tuple]]


class GazeToImageMapper:
    """Scene px -> screen px (markers) -> validation offset -> image px (the viewer's transform).

    Parameters
    ----------
    screen
        The :class:`ScreenMapper`.
    view
        The viewer's screen -> image transform: an object with ``screen_to_image(x, y)`` (the
        glance pipeline's ``ViewTransform``) or a plain callable; None keeps screen px.
    offset_px
        Constant screen-px correction from :mod:`appliance.gaze.validation` (added).

    ``tap``, when set, gets ``(timestamp_ns, x, y)`` of every sample mapped to the screen,
    before the correction: what an accuracy check measures (:mod:`appliance.ui.gaze_check`).
    """

    def __init__(self, screen: ScreenMapper, view: Any = None,
                 offset_px: tuple[float, float] = (0.0, 0.0),
                 screen_px_per_deg: Optional[float] = None) -> None:
        self.screen = screen
        self.view = view  # replaced by the UI on every zoom / pan (ViewTransform is frozen)
        self.offset_px = offset_px
        self.screen_px_per_deg = screen_px_per_deg
        self.tap: Optional[Callable[[int, float, float], None]] = None

    def __call__(self, timestamp_ns: int, x: float, y: float) -> Optional[tuple]:
        """Return (x, y) image px, plus px_per_deg when the view and display allow, or None."""
        s = self.screen.map(timestamp_ns, x, y)
        if s is None:
            return None
        tap = self.tap
        if tap is not None:
            tap(timestamp_ns, float(s[0]), float(s[1]))
        sx, sy = s[0] + self.offset_px[0], s[1] + self.offset_px[1]
        view = self.view
        if view is None:
            return sx, sy
        fn = getattr(view, "screen_to_image", view)
        out = fn(sx, sy)
        if out is None:
            return None
        if self.screen_px_per_deg and hasattr(view, "image_px_per_deg"):
            return float(out[0]), float(out[1]), float(view.image_px_per_deg(self.screen_px_per_deg))
        return float(out[0]), float(out[1])
