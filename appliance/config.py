"""The one configuration object of the appliance.

Loaded once (``load_config``) from a TOML file plus ``GLANCESEG_<SECTION>_<KEY>``
environment overrides, then passed down explicitly. No other module reads the
environment. Unknown sections or keys fail loudly, because a misspelt key that is
silently ignored on a clinic's device is a setting nobody knows is not applied.

Examples of overrides: ``GLANCESEG_DATA_DIR=/var/lib/glanceseg``,
``GLANCESEG_DICOMWEB_URL=https://pacs.example/dicom-web``,
``GLANCESEG_DICOMWEB_PASSWORD=...``, ``GLANCESEG_MODEL_VARIANT=fp32``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on JetPack 6
    import tomli as tomllib

from appliance.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_PREFIX = "GLANCESEG_"
CONFIG_ENV = "GLANCESEG_CONFIG"
#: Variables with the prefix that are not settings: the firmware scripts' command, the kiosk's
#: browser, the fault tests' trial count. They may share the units' environment file, so they
#: are passed over rather than refused as misspelt keys (which would stop the service).
NOT_SETTINGS = frozenset({CONFIG_ENV, "GLANCESEG_BIN", "GLANCESEG_KIOSK_BROWSER", "GLANCESEG_FAULT_TRIALS"})
REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class DataConfig:
    """Where all state lives, and how long delivered photographs are kept."""

    dir: Path = Path("~/.local/share/glanceseg")
    #: Days a photograph is kept after its delivery was confirmed; never deleted before.
    retention_days: float = 30.0
    #: New studies are refused when the data folder's file system has less free space.
    min_free_mb: int = 500
    #: Largest photograph file (MiB) the UI takes as an upload or from an import folder.
    max_upload_mb: int = 60
    #: A new study needs this many times the decoded photograph's size free, on top of min_free_mb.
    study_space_factor: float = 4.0
    #: Seconds to wait for the database lock before giving up.
    busy_timeout_s: float = 30.0


@dataclass(frozen=True)
class ImagingConfig:
    """How photographs are read and judged.

    ``fov_deg``: the camera's field angle, which the field of view's diameter in px turns
    into micrometres per pixel (DICOM photographs state their own). ``um_per_px``: the
    pixel size itself, for a camera whose photographs are cropped inside the aperture, so
    no edge of the field of view is there to measure; 0 derives it from the field of view.
    ``max_megapixels`` / ``max_file_mb``: a photograph with more pixels (read from its
    header, before decoding) or a larger file (MiB) is refused by
    ``imaging.io.load_photograph``.
    """

    fov_deg: float = 45.0
    um_per_px: float = 0.0
    max_megapixels: float = 60.0
    max_file_mb: int = 200


@dataclass(frozen=True)
class ModelConfig:
    """Which model runs, and how onnxruntime runs it.

    ``dir``: the committed model folder (``<data_dir>/models/current`` wins when a model
    update installed one). ``variant``: ``int8`` or ``fp32`` (files listed in the
    manifest), or ``auto``: int8 on the CPU provider, fp32 on a GPU one (the int8 files are
    quantized for the CPU and run 5x slower than fp32 on CUDA;
    ``glance.runtime.onnx.resolve_variant``). ``name``: the model family a model update must
    carry to be installed. ``runtime``: a key of
    ``glance.runtime.factory.RUNTIMES``. ``providers``:
    ``auto`` (TensorRT -> CUDA -> CPU, whatever the onnxruntime build offers) or a comma
    list such as ``cuda,cpu``. ``intra_op_threads``: 0 = one per core; ``inter_op_threads``:
    0 = onnxruntime's default. ``allow_spinning``:
    worker threads busy-wait between ops (lower latency, but burns a core).
    ``cpu_arena``: onnxruntime's CPU memory arena. ``trt_cache_dir`` / ``fp16``: TensorRT
    engine cache and FP16. ``cache_tiles``: tile embeddings kept in RAM (2 MiB each, float16);
    ``spill_tiles``: more kept on disk under ``<data_dir>/cache/embeddings`` and read back
    instead of encoded again (0: none). A pre-encoded photograph needs up to ~300 in all;
    keeping them all in RAM would cost 574 MB (docs/performance.md).
    """

    dir: Path = REPO_MODELS_DIR
    name: str = "litemedsam"
    variant: str = "auto"
    runtime: str = "onnx"
    providers: str = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    allow_spinning: bool = True
    cpu_arena: bool = True
    trt_cache_dir: Path = Path("~/.cache/glanceseg/trt")
    fp16: bool = True
    cache_tiles: int = 32
    spill_tiles: int = 512


@dataclass(frozen=True)
class GlanceConfig:
    """Detection settings shared by scan and gaze mode.

    ``display_threshold``: lesions scoring at least this are shown (and in ``mask.png``);
    0.61 is the score at 2 false positives per image on IDRiD_01-12 (``glanceseg eval
    --split tune``). ``prompt_min_score``: candidates scoring at least this at the
    saliency stage are segmented by the model (0.46: 4 false positives per image);
    ``use_model``: load the SAM model at all. ``gaze_display_threshold``: the same for a
    gaze-mode result, whose scores weigh in the gaze (:mod:`appliance.glance.gaze_scoring`);
    0.55 is the gaze-mode score at 1 false positive per image on IDRiD_01-12 with the
    simulated reader (``glanceseg eval --split tune --gaze simulated``).
    """

    display_threshold: float = 0.61
    prompt_min_score: float = 0.46
    gaze_display_threshold: float = 0.55
    use_model: bool = True


@dataclass(frozen=True)
class DisplayConfig:
    """The reading screen: physical size, resolution and viewing distance."""

    width_mm: float = 344.0
    height_mm: float = 194.0
    width_px: int = 1920
    height_px: int = 1080
    viewing_distance_mm: float = 550.0


@dataclass(frozen=True)
class GazeConfig:
    """Gaze source and fixation / heat-map settings (angles in degrees).

    Fixations are I-DT (``appliance.gaze.fixations``): samples within
    ``fixation_dispersion_deg`` for at least ``fixation_min_ms``; a gap in the samples longer
    than ``fixation_max_gap_ms``, or a clock step over ``fixation_clock_jump_ms``, ends one.
    The heat map adds a Gaussian of ``heatmap_sigma_deg`` per fixation on a grid of
    ``heatmap_cell_px`` image px; a ``roi_cell_px`` cell whose heat (dwell seconds) reaches
    ``roi_threshold_s`` is glanced ground. ``pointer_queue_size``: samples the pointer source
    holds for the pipeline; ``simulated_seed``: the simulated reader's seed.
    """

    source: str = "pointer"  # pointer | csv | pupil_export | simulated | neon
    fixation_dispersion_deg: float = 1.0
    fixation_min_ms: float = 100.0
    fixation_max_gap_ms: float = 75.0
    fixation_clock_jump_ms: float = 1000.0
    heatmap_sigma_deg: float = 1.0
    heatmap_cell_px: int = 8
    roi_threshold_s: float = 0.05
    roi_cell_px: int = 64
    tracker_error_deg: float = 1.5  # mean angular error (Neon: 1.3-1.8°); gaze-mode scoring
    replay_path: str = ""  # gaze CSV (csv) or export folder (pupil_export)
    replay_speed: float = 0.0  # 0: as fast as possible; 1: real time
    screen_mapping_path: str = ""  # scene->screen homography JSON (pupil_export)
    pointer_queue_size: int = 4096
    simulated_seed: int = 0


@dataclass(frozen=True)
class TrackerConfig:
    """The Pupil Labs Neon / Invisible companion device (``appliance.gaze.neon``).

    ``ip`` empty means mDNS discovery; clinic networks often block multicast, so a fixed
    address is the reliable setting. Recording is off by default because the scene camera
    films patient photographs and Companion recordings may be uploaded to a cloud.

    ``discover_timeout_s``: how long mDNS looks for a Companion; ``request_timeout_s``: one
    request to it (seconds). A gaze stream silent for ``stall_timeout_s`` ends the session; one
    that delivered gaze is reopened at once, one that did not after ``reconnect_initial_s``,
    doubling up to ``reconnect_max_s``.
    ``queue_size``: gaze samples buffered for the pipeline (the oldest are dropped when it is
    full). The clock offset to the phone is measured with ``time_echo_measurements`` echoes
    every ``time_echo_interval_s``. ``fixation_events``: also stream the Companion's own
    fixation events (``NeonGazeSource.receive_fixation``, for research tools). Off by
    default: the pipeline detects its own fixations from the gaze, so the appliance reads
    none of them, and the stream was one more RTSP connection on the phone and the device; ``scene_stream``: receive scene-camera frames to find the screen's markers
    (``marker_size_px`` squares ``marker_margin_px`` from the screen edges), trusting a
    frame's marker homography for ``max_frame_gap_ms`` of gaze.
    """

    ip: str = ""
    port: int = 8080
    discover_timeout_s: float = 10.0
    stall_timeout_s: float = 2.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    queue_size: int = 4000
    time_echo_measurements: int = 20
    time_echo_interval_s: float = 60.0
    fixation_events: bool = False
    scene_stream: bool = True
    marker_size_px: int = 160
    marker_margin_px: int = 8
    max_frame_gap_ms: float = 100.0
    recording_enabled: bool = False
    request_timeout_s: float = 3.0


@dataclass(frozen=True)
class DicomwebConfig:
    """The clinic's central DICOMweb server and credentials."""

    url: str = ""
    user: str = ""
    password: str = ""
    #: CA bundle (PEM) used to verify the server; empty: the system store.
    ca: str = ""
    #: Client certificate and key (PEM) for mutual TLS; empty: none.
    cert: str = ""
    key: str = ""
    #: Seconds the server may take to accept a connection, or go without taking or sending a
    #: byte (an upload may take as long as the link needs while it moves).
    timeout_s: float = 30.0
    #: Seconds for the cheap reachability probe the scheduler makes before a pass.
    probe_timeout_s: float = 5.0


@dataclass(frozen=True)
class SyncConfig:
    """Outbox delivery schedule."""

    #: Run the background scheduler in ``glanceseg serve``.
    enabled: bool = True
    #: Seconds between automatic passes (a "Sync now" or the button starts one at once).
    interval_s: float = 60.0
    #: Full-jitter exponential backoff: delay drawn from [0, min(max, base * 2**attempts)].
    backoff_base_s: float = 5.0
    backoff_max_s: float = 3600.0
    #: Seconds ``glanceseg sync`` waits for another process's pass to finish.
    lock_timeout_s: float = 600.0


@dataclass(frozen=True)
class HwConfig:
    """GPIO pins (BCM numbering) of the sync button, LEDs and buzzer; 0 means absent."""

    enabled: bool = False
    #: "" (gpiozero's default), "jetson" (the Jetson.GPIO adapter), "mock", or a gpiozero name
    #: ("lgpio", "rpigpio", "pigpio", "native").
    pin_factory: str = ""
    sync_button_pin: int = 0
    led_ready_pin: int = 0
    led_syncing_pin: int = 0
    led_pending_pin: int = 0
    led_error_pin: int = 0
    buzzer_pin: int = 0
    #: Seconds a press must settle before it counts (gpiozero's bounce_time).
    button_bounce_s: float = 0.05
    #: On and off time (s) of the syncing LED's blink.
    blink_s: float = 0.5
    #: Length (s) of the one beep on entering the error state.
    buzzer_beep_s: float = 0.2


@dataclass(frozen=True)
class UiConfig:
    """The touchscreen web UI.

    ``host`` other than loopback is refused unless ``tls_cert`` and ``tls_key`` are set (LAN
    only over TLS). ``import_roots``: colon-separated folders (USB mount points) a technician
    may import from. ``threads``: waitress workers (each live reader stream holds one).
    ``secure_cookies`` forces the Secure cookie flag (always on with TLS).
    ``idle_logout_s``: inactivity that ends a session; ``lockout_attempts`` wrong PINs in a
    row lock an account for ``lockout_s`` (docs/security.md). ``language``: the catalog in
    ``ui/translations/<language>.json``.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    idle_logout_s: float = 600.0
    lockout_attempts: int = 5
    lockout_s: float = 300.0
    tls_cert: str = ""
    tls_key: str = ""
    language: str = "en"
    import_roots: str = "/media:/mnt"
    threads: int = 12
    secure_cookies: bool = False


DEV_UPDATE_PUBLIC_KEY = Path(__file__).resolve().parent / "sync" / "keys" / "dev_ed25519.pub"


@dataclass(frozen=True)
class UpdatesConfig:
    """Signed model and software bundles (see docs/updates.md for key handling).

    ``public_key`` is the PEM Ed25519 key whose private half signs bundles. The default is
    the *development* key, whose private half is in the repository: a clinic build must set
    ``GLANCESEG_UPDATES_PUBLIC_KEY`` to the production key. ``server_url`` is the https base
    of the update server (its ``index.json``); ``ca`` a CA bundle for it. ``allow_dev_key``:
    installing a bundle verified with the development key (compared by the key itself, not
    its path) is refused unless this is true, because anyone can sign with that key.
    ``check_interval_s``: how often ``glanceseg serve`` asks ``server_url`` for a newer model;
    ``timeout_s``: one request or download there.
    """

    public_key: str = str(DEV_UPDATE_PUBLIC_KEY)
    allow_dev_key: bool = False
    server_url: str = ""
    ca: str = ""
    timeout_s: float = 60.0
    check_interval_s: float = 6 * 3600.0


@dataclass(frozen=True)
class Config:
    """Every setting of the appliance, one frozen object."""

    data: DataConfig = field(default_factory=DataConfig)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    glance: GlanceConfig = field(default_factory=GlanceConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    gaze: GazeConfig = field(default_factory=GazeConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    dicomweb: DicomwebConfig = field(default_factory=DicomwebConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    hw: HwConfig = field(default_factory=HwConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    updates: UpdatesConfig = field(default_factory=UpdatesConfig)

    @property
    def data_dir(self) -> Path:
        """Path: the data folder with ``~`` expanded."""
        return self.data.dir.expanduser()

    def replace(self, **sections: Mapping[str, Any]) -> "Config":
        """Return a copy with some keys of some sections changed (tests, ``--demo``).

        Example: ``config.replace(data={"dir": tmp_path})``.
        """
        return _build({**_as_dict(self), **{k: {**_as_dict(self)[k], **v} for k, v in sections.items()}})


def _as_dict(config: Config) -> dict[str, dict[str, Any]]:
    return {f.name: dataclasses.asdict(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _coerce(value: Any, type_: Any, where: str) -> Any:
    """Convert a TOML or environment value to the field's type, or raise ConfigError."""
    origin = typing.get_origin(type_)
    if origin is typing.Union:  # Optional[X]
        inner = [t for t in typing.get_args(type_) if t is not type(None)][0]
        return None if value in (None, "") else _coerce(value, inner, where)
    try:
        if type_ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(value, (list, tuple, dict)):
            raise ValueError(value)  # a TOML list where one value is meant: never its text
        if type_ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)  # 0.9 MB must not become 0 (a guard switched off)
            return int(value)
        if type_ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if type_ is Path:
            return Path(str(value))
        if type_ is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {value!r} is not a valid {type_.__name__}.") from exc
    raise ConfigError(f"{where}: unsupported setting type {type_!r}.")


def _build(raw: Mapping[str, Any]) -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = set(raw) - set(sections)
    if unknown:
        raise ConfigError(f"Unknown configuration section(s): {', '.join(sorted(unknown))}.")
    built = {}
    for name, f in sections.items():
        cls = f.default_factory()  # type: ignore[misc]
        hints = typing.get_type_hints(type(cls))
        values = raw.get(name, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"Configuration section [{name}] must be a table.")
        bad = set(values) - set(hints)
        if bad:
            raise ConfigError(f"Unknown key(s) in [{name}]: {', '.join(sorted(bad))}.")
        built[name] = type(cls)(**{k: _coerce(v, hints[k], f"[{name}] {k}") for k, v in values.items()})
    config = Config(**built)
    for (section, key), (allowed, rule) in LIMITS.items():
        value = getattr(getattr(config, section), key)
        if not allowed(value):
            raise ConfigError(f"[{section}] {key} = {value!r}: it {rule}.")
    return config


#: Settings whose value a type alone does not make sensible: a zero sync interval probes the
#: PACS without pause, an empty data folder is the working directory.
LIMITS: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("data", "dir"): (lambda v: str(v).strip() not in ("", "."), "must name a folder"),
    ("data", "min_free_mb"): (lambda v: v >= 0, "cannot be negative"),
    ("sync", "interval_s"): (lambda v: v > 0, "must be above 0"),
    ("ui", "port"): (lambda v: 0 <= v <= 65535, "must be a TCP port (0 picks a free one)"),
    ("ui", "threads"): (lambda v: v >= 1, "must be at least 1"),
}


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    sections = {f.name for f in dataclasses.fields(Config)}
    out: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in NOT_SETTINGS:
            continue
        rest = key[len(ENV_PREFIX):].lower()
        section, _, name = rest.partition("_")
        if section not in sections or not name:
            raise ConfigError(f"Environment variable {key} names no configuration key.")
        out.setdefault(section, {})[name] = value
    return out


def load_config(path: Optional[Path] = None, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Load the configuration.

    Parameters
    ----------
    path
        TOML file; defaults to ``$GLANCESEG_CONFIG`` when set, else built-in defaults.
    environ
        Environment to read overrides from (``os.environ`` when None).

    Returns
    -------
    Config
        The frozen configuration.

    Raises
    ------
    ConfigError
        If the file is missing or malformed, or a section, key or value is unknown or invalid.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"Configuration file {path} does not exist.") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Configuration file {path} is not valid TOML: {exc}.") from exc
    for section, values in _env_overrides(environ).items():
        raw.setdefault(section, {}).update(values)
    config = _build(raw)
    logger.debug("configuration loaded from %s", path or "defaults")
    return config
