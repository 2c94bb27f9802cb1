"""The touchscreen web UI: Flask app factory (:mod:`app`), blueprints, templates and static assets.

The package imports nothing itself, so ``glanceseg`` commands other than ``serve`` do not load
Flask: ``from appliance.ui.app import create_app``, ``from appliance.ui.services import Services``.
"""
