"""``glanceseg bench``'s model figures: int8 against fp32 on photographs no build step has seen."""

from __future__ import annotations

import math
from pathlib import Path

from appliance.config import Config
from appliance.eval.dataset import REPORT_IDS
from appliance.glance.agreement import AGREEMENT_IDS
from appliance.glance.bench_model import encoder_ms_naive, int8_vs_fp32_iou
from appliance.glance.modelfiles import load_for_config


def test_report_split_is_disjoint_from_the_agreement_tiles() -> None:
    assert REPORT_IDS[0] == "IDRiD_13" and "IDRiD_18" not in REPORT_IDS
    assert not set(REPORT_IDS) & set(AGREEMENT_IDS)


def test_int8_masks_agree_with_fp32_on_a_report_photograph(config: Config, idrid_dir: Path) -> None:
    # One tile of IDRiD_13, its real MAs as box prompts, through both committed models.
    iou = int8_vs_fp32_iou(config, idrid_dir, ids=("IDRiD_13",), tiles_per_image=1)
    assert math.isfinite(iou)
    assert 0.85 <= iou <= 1.0


def test_no_tiles_give_no_figure(config: Config, idrid_dir: Path) -> None:
    assert math.isnan(int8_vs_fp32_iou(config, idrid_dir, ids=(), tiles_per_image=1))


def test_naive_baseline_keeps_stdout_clean_when_a_provider_cannot_start(tensorrt_without_libnvinfer, config: Config,
                                                                          capsys) -> None:
    # The naive session is opened apart from the runtime's (default options); on an H200 its
    # fallback banner was the one line that still reached the bench's JSON on stdout.
    auto = config.replace(model={"providers": "auto"})
    assert encoder_ms_naive(load_for_config(auto), auto, repeats=1) > 0
    assert capsys.readouterr().out == ""
