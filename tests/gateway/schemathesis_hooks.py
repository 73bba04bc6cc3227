"""Schemathesis hooks for tests/gateway/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

The fuzzer draws Idempotency-Key values from a small space ("0", "!", ...), so it reuses a key
with another body or on another endpoint — which the API answers, by design and as documented,
with a 422. Its positive_data_acceptance check would count that as a schema-valid request
rejected. So a schema-valid key of a positive case is made to name one call: the fuzzer's key
plus a digest of what the call sends. Negative cases (an invalid key, ...) are left as drawn."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import schemathesis

KEY = re.compile(r"[\x21-\x7e]{1,255}")


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    meta = case.meta
    if key is None or meta is None or not meta.generation.mode.is_positive:
        return
    if not KEY.fullmatch(key):
        return
    call = [case.method, case.path, case.path_parameters, case.query, case.body]
    digest = hashlib.sha256(json.dumps(call, sort_keys=True, default=repr).encode()).hexdigest()
    headers["Idempotency-Key"] = f"{key[:200]}.{digest[:32]}"
