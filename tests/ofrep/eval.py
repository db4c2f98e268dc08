"""Evaluates flags through the real OpenFeature Python SDK and its stock
OFREP provider (tests/tests/ofrep.rs runs it against a real agent).

stdin: {"base_url": URL, "evaluations": [{"type": "boolean"|"object",
        "key": KEY, "default": VALUE, "context": {...}}]}
stdout: one JSON list, per evaluation: value, variant, reason, error_code,
        metadata, as the SDK's evaluation details report them.
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def word(v):
    """An enum's wire value, or the value itself (None stays None)."""
    return getattr(v, "value", v)


def main():
    request = json.load(sys.stdin)
    api.set_provider(OFREPProvider(request["base_url"]))
    client = api.get_client()
    out = []
    for e in request["evaluations"]:
        attributes = dict(e.get("context", {}))
        targeting_key = attributes.pop("targetingKey", None)
        context = EvaluationContext(targeting_key=targeting_key, attributes=attributes)
        if e["type"] == "boolean":
            d = client.get_boolean_details(e["key"], e["default"], context)
        else:
            d = client.get_object_details(e["key"], e["default"], context)
        out.append(
            {
                "value": d.value,
                "variant": d.variant,
                "reason": word(d.reason),
                "error_code": word(d.error_code),
                "metadata": dict(d.flag_metadata or {}),
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
