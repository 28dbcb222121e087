"""The Helm chart, checked without a helm binary (none can be installed here): its values
parse, its bundled policy is a valid opsbot policy, and every ``.Values`` path the templates
use is defined."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from opsbot.policy import Policy

CHART = Path(__file__).resolve().parent.parent / "helm" / "opsbot"


def test_chart_metadata_and_policy(tmp_path: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "opsbot"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (tmp_path / "policy.yaml").write_text(values["policy"])
    policy = Policy.load(tmp_path / "policy.yaml")
    assert [r.name for r in policy.doc.rules] == ["everyone reads"]


def test_templates_only_use_defined_values() -> None:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    used: set[str] = set()
    for template in (CHART / "templates").iterdir():
        used.update(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert used, "the templates reference no values"
    for path in sorted(used):
        node: Any = values
        for key in path.split("."):
            assert isinstance(node, dict) and key in node, f".Values.{path} is not in values.yaml"
            node = node[key]
