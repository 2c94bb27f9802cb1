"""The touchscreen web UI: Flask app factory, blueprints, templates and static assets."""

from appliance.ui.app import create_app
from appliance.ui.services import Services, build_services

__all__ = ["create_app", "Services", "build_services"]
