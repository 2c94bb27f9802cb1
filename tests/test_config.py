"""The one configuration object: TOML file, GLANCESEG_* overrides, strict about unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigError


def test_defaults_file_and_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "glanceseg.toml"
    path.write_text('[data]\ndir = "/srv/glanceseg"\n[dicomweb]\nurl = "https://pacs.example/dicom-web"\n')
    config = load_config(path, environ={"GLANCESEG_DICOMWEB_PASSWORD": "s3cret", "GLANCESEG_MODEL_VARIANT": "fp32",
                                        "GLANCESEG_UI_PORT": "9090", "GLANCESEG_GLANCE_USE_MODEL": "false"})
    assert config.data.dir == Path("/srv/glanceseg")
    assert config.dicomweb.url == "https://pacs.example/dicom-web" and config.dicomweb.password == "s3cret"
    assert (config.model.variant, config.ui.port, config.glance.use_model) == ("fp32", 9090, False)
    assert load_config(environ={}).ui.port == 8080


def test_the_documented_environment_names(tmp_path: Path) -> None:
    env = {"GLANCESEG_DATA_DIR": str(tmp_path), "GLANCESEG_DICOMWEB_URL": "http://127.0.0.1:8042/dicom-web",
           "GLANCESEG_DICOMWEB_USER": "station", "GLANCESEG_DICOMWEB_CA": "/etc/ca.pem",
           "GLANCESEG_DICOMWEB_CERT": "/etc/c.pem", "GLANCESEG_DICOMWEB_KEY": "/etc/k.pem"}
    config = load_config(environ=env)
    assert config.data_dir == tmp_path
    assert (config.dicomweb.user, config.dicomweb.ca, config.dicomweb.cert, config.dicomweb.key) == (
        "station", "/etc/ca.pem", "/etc/c.pem", "/etc/k.pem")


@pytest.mark.parametrize("text, environ, message", [
    ("[data]\ndirr = 1\n", {}, "Unknown key"),
    ("[nosuch]\nx = 1\n", {}, "Unknown configuration section"),
    ("[ui]\nport = \"eighty\"\n", {}, "not a valid int"),
    ("[ui\n", {}, "not valid TOML"),
    ("", {"GLANCESEG_UI_PROT": "1"}, "Unknown key"),
    ("", {"GLANCESEG_NOSUCH": "1"}, "names no configuration key"),
    ("", {"GLANCESEG_GLANCE_USE_MODEL": "perhaps"}, "not a valid bool"),
    # Silent mis-parses once: a list read as its text, a fraction truncated to a switched-off guard.
    ("[ui]\nimport_roots = [\"/media\", \"/mnt\"]\n", {}, "not a valid str"),
    ("[data]\nmin_free_mb = 0.9\n", {}, "not a valid int"),
    # Values a type allows but the appliance cannot run with.
    ("", {"GLANCESEG_SYNC_INTERVAL_S": "0"}, "must be above 0"),
    ("", {"GLANCESEG_DATA_DIR": ""}, "must name a folder"),
    ("[ui]\nport = 70000\n", {}, "TCP port"),
    ("[data]\nmin_free_mb = -5\n", {}, "cannot be negative"),
])
def test_mistakes_fail_loudly(tmp_path: Path, text: str, environ: dict, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=environ)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", environ={})


def test_variables_of_the_scripts_and_the_kiosk_are_not_settings(tmp_path: Path) -> None:
    # They may share the units' environment file: refusing them as misspelt keys stopped the service.
    environ = {"GLANCESEG_KIOSK_BROWSER": "/usr/bin/chromium", "GLANCESEG_BIN": "/opt/glanceseg/venv/bin/glanceseg"}
    assert load_config(environ=environ).ui.port == 8080


def test_every_key_is_read_by_the_appliance() -> None:
    # A key nothing reads is worse than a misspelt one (which fails loudly): a technician sets
    # it, the file loads, and the setting is silently not applied. Every field of every section
    # must be read as an attribute somewhere outside config.py.
    import ast
    import dataclasses

    from appliance.config import Config

    package = Path(__file__).resolve().parents[1] / "appliance"
    read: set[str] = set()
    for path in package.rglob("*.py"):
        if path.name != "config.py":
            read |= {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
    unread = [f"[{section.name}] {key.name}" for section in dataclasses.fields(Config)
              for key in dataclasses.fields(section.default_factory())  # type: ignore[misc]
              if key.name not in read]
    assert not unread, unread
