"""The profiles resource: what each profile serves and its limits."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.services import services

bp = Blueprint("profiles", __name__, url_prefix="/v1/profiles")


@bp.get("")
def list_profiles() -> Response:
    """List the profiles of the profiles file, as read at start."""
    profiles = services().profiles.values()
    return jsonify(object="list", data=[profile.as_api_dict() for profile in profiles])
