"""`--format json`: the report document, stable and documented in the README."""

import json

from doctor.report import register


@register("json")
def render(report: dict, stream, color: bool = False) -> None:
    json.dump(report, stream, indent=2, sort_keys=False)
    stream.write("\n")
