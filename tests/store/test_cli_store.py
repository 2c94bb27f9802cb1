"""``glanceseg study add`` / ``sync --once`` end to end, and the gaze summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import GazeError
from appliance.store.cli_store import gaze_summary

REPO = Path(__file__).resolve().parents[2]
#: Runs the real ``glanceseg`` entry point, leaving out command modules other areas have not
#: written yet (so this test depends only on what ``study add`` and ``sync`` need).
GLANCESEG = (
    "import importlib.util, sys\n"
    "import appliance.cli as cli\n"
    "cli.COMMAND_MODULES = tuple(m for m in cli.COMMAND_MODULES if importlib.util.find_spec(m))\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def test_gaze_summary(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("timestamp_ns,x,y,worn\n0,10,10,1\n5000000,,,1\n10000000,12,11,0\n1000000000,13,12,1\n")
    summary = gaze_summary(path)
    assert summary == {"file": "g.csv", "samples": 4, "valid_samples": 2, "valid_fraction": 0.5, "duration_s": 1.0}
    bad = tmp_path / "bad.csv"
    bad.write_text("t,a\n1,2\n")
    with pytest.raises(GazeError, match="timestamp_ns,x,y"):
        gaze_summary(bad)


def _photo() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / "microaneurysms.png"


@pytest.mark.orthanc
def test_study_add_then_sync_once_twice(tmp_path, clean_orthanc):
    """The independent check: two studies, one pass delivers photo + SEG (+ SR) each, a second adds nothing."""
    from sync.orthanc import PASSWORD, USER

    env = {**os.environ, "GLANCESEG_DATA_DIR": str(tmp_path / "data"), "GLANCESEG_DATA_MIN_FREE_MB": "1",
           "GLANCESEG_DICOMWEB_URL": clean_orthanc.dicomweb, "GLANCESEG_DICOMWEB_USER": USER,
           "GLANCESEG_DICOMWEB_PASSWORD": PASSWORD}
    env.pop("GLANCESEG_CONFIG", None)

    def glanceseg(*args):
        return subprocess.run([sys.executable, "-c", GLANCESEG, *args], capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=600)

    uids = []
    for patient, eye in (("PAT-A", "L"), ("PAT-B", "R")):
        out = glanceseg("study", "add", str(_photo()), "--patient", patient, "--eye", eye, "--no-model")
        assert out.returncode == 0, out.stderr
        added = json.loads(out.stdout)
        assert added["queued"] == ["photo", "seg", "sr"]
        uids.append(added["study_uid"])
    first = glanceseg("sync", "--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["delivered"] == 6
    for uid in uids:
        modalities = sorted(
            clean_orthanc.get(f"/instances/{i}")["MainDicomTags"].get("SOPInstanceUID") and
            clean_orthanc.get(f"/series/{s}")["MainDicomTags"]["Modality"]
            for s in [x for x in clean_orthanc.get("/series")
                      if clean_orthanc.get(f"/series/{x}/study")["MainDicomTags"]["StudyInstanceUID"] == uid]
            for i in clean_orthanc.get(f"/series/{s}")["Instances"]
        )
        assert modalities == ["OP", "SEG", "SR"]
    before = sorted(clean_orthanc.sop_uids())
    second = glanceseg("sync", "--once")
    assert second.returncode == 0 and json.loads(second.stdout)["delivered"] == 0
    assert sorted(clean_orthanc.sop_uids()) == before


def test_study_add_refuses_an_id_the_pacs_cannot_take_before_any_work(tmp_path, capsys, monkeypatch):
    from appliance.cli import main

    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    missing = tmp_path / "not-read.jpg"  # the ID is refused before the photograph is even opened
    assert main(["study", "add", str(missing), "--patient", "P\\1", "--eye", "L", "--no-model"]) == 2
    assert "backslash" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_gaze_summary_reads_every_file_the_gaze_contract_allows(tmp_path):
    """study add --gaze takes what segment --gaze takes: a BOM, CRLF, spaces around the header,
    columns in another order, float timestamps (DESIGN.md's gaze CSV contract)."""
    text = ("\ufeff y , timestamp_ns , x ,worn\r\n"
            "10,0.0,10,1\r\n,5000000.0,,1\r\n11,1.0e7,12,0\r\n12,1000000000,13,1\r\n\r\n")
    path = tmp_path / "g.csv"
    path.write_bytes(text.encode("utf-8"))
    assert gaze_summary(path) == {"file": "g.csv", "samples": 4, "valid_samples": 2, "valid_fraction": 0.5,
                                  "duration_s": 1.0}


def test_study_add_refuses_the_same_photograph_again_for_the_same_eye(tmp_path, capsys, monkeypatch, caplog):
    # The import page refuses a double submit; study add stored a second study of the same
    # examination and queued it to the PACS as well.
    from appliance.cli import main
    from appliance.config import load_config
    from appliance.store.store import Store

    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GLANCESEG_DATA_MIN_FREE_MB", "1")
    monkeypatch.delenv("GLANCESEG_CONFIG", raising=False)
    add = ["study", "add", str(_photo()), "--no-model", "--patient"]
    assert main([*add, "PAT-A", "--eye", "L"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*add, "PAT-A", "--eye", "L"]) == 2
    assert f"already added for this patient and eye: study {first['study_id']}" in capsys.readouterr().err
    assert main([*add, "PAT-B", "--eye", "R"]) == 0  # shared on purpose, or a mix-up: added, with a word
    assert "added before for another patient or eye" in caplog.text
    with Store(load_config()) as store:
        assert sorted(s.patient_id for s in store.worklist()) == ["PAT-A", "PAT-B"]


def test_study_add_warns_when_the_cameras_dicom_names_the_other_eye(tmp_path, monkeypatch, caplog):
    import numpy as np
    from dicom_files import ophthalmic_dicom
    from skimage.io import imread

    from appliance.cli import main

    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GLANCESEG_DATA_MIN_FREE_MB", "1")
    grey = imread(_photo())  # scikit-image's crop is red-free: one channel
    rgb = np.ascontiguousarray(np.dstack([grey] * 3) if grey.ndim == 2 else grey[:, :, :3])
    path = tmp_path / "IM000001"
    path.write_bytes(ophthalmic_dicom(rgb, ImageLaterality="L"))
    assert main(["study", "add", str(path), "--patient", "PAT-A", "--eye", "R", "--no-model"]) == 0
    assert "header says the left eye; it is filed as the right eye" in caplog.text
