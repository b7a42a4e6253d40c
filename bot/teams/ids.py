"""Ids shared by the Teams app manifest (teams_app/manifest.json) and the Teams adapter.

Teams sends a message extension's command id back with every invoke, so the adapter's constant and
the manifest must agree; tests/test_teams_manifest.py checks that they do.
"""

from __future__ import annotations

LOG_AS_DECISION = "log_as_decision"  # the "Log as decision" message action (Slack's shortcut uses the same id)
