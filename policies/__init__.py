"""Bundled policies: ``default.yaml`` is what a new install runs with (``OPSBOT_POLICY_PATH`` unset)."""
