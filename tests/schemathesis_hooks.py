"""Schemathesis hooks for the contract fuzzing of tests/fuzz.rs.

JSON Schema's `integer` admits `2.0`, but the orders contract refuses a
quantity written as a float (docs/api.md: "not `2.0`"): a generated body
whose quantity is a float is not a valid order for us, so it is not sent as
one.

A well-formed `If-Match` or `If-None-Match` that does not hold is answered
412 (or 304 on a read), which RFC 9110 requires; schemathesis counts a 412
to a schema-valid request as "valid data rejected". Such requests are not
sent here (tests/semantics.rs checks the preconditions); malformed values
(a 400) and empty ones (counted as not sent) still are.

Everything else schemathesis generates is sent.
"""

import re

import schemathesis

# The pattern of the IfMatch and IfNoneMatch parameters in docs/openapi.yaml,
# but for the empty value (counted as not sent: answered as without it).
CONDITION = re.compile(r'^(\*|(W/)?"[!#-~]*"(, ?(W/)?"[!#-~]*")*)$')


@schemathesis.hook
def filter_body(ctx, body):
    return not (isinstance(body, dict) and isinstance(body.get("quantity"), float))


@schemathesis.hook
def filter_headers(ctx, headers):
    for name, value in (headers or {}).items():
        if name.lower() in ("if-match", "if-none-match") and CONDITION.match(value or ""):
            return False
    return True
