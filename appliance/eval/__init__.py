"""Evaluation on data sets laid out like idrid-ma: FROC / CPM, pixel AUPR and Dice, gaze mode."""

from appliance.eval.dataset import DatasetItem, iter_split, load_dataset
from appliance.eval.froc import FrocResult, GroundTruth, froc, ground_truth_from_mask, match_lesions

__all__ = ["DatasetItem", "iter_split", "load_dataset", "FrocResult", "GroundTruth", "froc",
           "ground_truth_from_mask", "match_lesions"]
