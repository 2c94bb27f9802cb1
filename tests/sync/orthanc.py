"""A real Orthanc with the DICOMweb plugin on a free loopback port, for the sync tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import requests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_CANDIDATES = [
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
]
USER, PASSWORD = "glance", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_plugin() -> Optional[str]:
    for candidate in PLUGIN_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    try:
        out = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    for line in out.splitlines():
        if "DicomWeb" in line and ".so" in line and os.path.isfile(line):
            return line
    return None


def available() -> Optional[str]:
    """Return None when Orthanc and its DICOMweb plugin are usable, else the reason they are not."""
    if not os.path.exists(ORTHANC):
        return "the Orthanc binary is not installed (apt-get install orthanc orthanc-dicomweb)"
    if find_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
    return None


class OrthancServer:
    """Orthanc on loopback with temporary storage; can be stopped, killed and restarted on the same data."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.start_check = lambda: requests.get(self.rest + "/system", auth=(USER, PASSWORD), timeout=1)
        (self.workdir / "storage").mkdir(parents=True, exist_ok=True)
        (self.workdir / "index").mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "orthanc.json"
        self.config_path.write_text(json.dumps({
            "Name": "glanceseg-test",
            "HttpPort": self.port,
            "HttpBindAddress": "127.0.0.1",
            "DicomServerEnabled": False,
            "DicomPort": free_port(),
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [find_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "HttpTimeout": 60,
            "StableAge": 1,
        }, indent=1))

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.rest}/dicom-web"

    def start(self, timeout_s: float = 30.0) -> None:
        log = open(self.workdir / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}); see {self.workdir / 'orthanc.log'}")
            try:
                if self.start_check().status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("Orthanc did not start in time")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str):
        r = requests.get(self.rest + path, auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()
        return r.json()

    def instances(self) -> list[dict]:
        """Return every stored instance's main DICOM tags."""
        return [self.get(f"/instances/{i}") for i in self.get("/instances")]

    def sop_uids(self) -> list[str]:
        return [inst["MainDicomTags"]["SOPInstanceUID"] for inst in self.instances()]

    def instance_file(self, sop_uid: str) -> bytes:
        found = requests.post(self.rest + "/tools/lookup", data=sop_uid, auth=(USER, PASSWORD), timeout=30).json()
        ident = [f for f in found if f["Type"] == "Instance"][0]["ID"]
        r = requests.get(self.rest + f"/instances/{ident}/file", auth=(USER, PASSWORD), timeout=60)
        r.raise_for_status()
        return r.content

    def clear(self) -> None:
        for study in self.get("/studies"):
            requests.delete(self.rest + f"/studies/{study}", auth=(USER, PASSWORD), timeout=30).raise_for_status()
