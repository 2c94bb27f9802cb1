"""Translation layer: one JSON catalog per language, English message ids as keys.

A clinic adds its language by copying ``translations/en.json`` to ``<code>.json`` and translating
the values; a message missing from a catalog falls back to English (the id itself), so a partial
catalog never shows blanks.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

CATALOG_DIR = Path(__file__).resolve().parent / "translations"


@lru_cache(maxsize=16)
def catalog(language: str) -> dict[str, str]:
    """Return the catalog of ``language`` (empty when missing: English ids are shown)."""
    if not language.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"Invalid language code {language!r}.")
    path = CATALOG_DIR / f"{language}.json"
    if not path.is_file():
        logger.warning("no translation catalog for %s; showing English", language)
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_") and isinstance(v, str) and v}


def translate(language: str, message: str, **values: object) -> str:
    """Translate ``message`` and fill ``{name}`` placeholders from ``values``."""
    text = catalog(language).get(message, message)
    return text.format(**values) if values else text
