"""Schemathesis hooks for the API's JSON-lines bodies (application/x-ndjson).

Loaded by api_fuzz.py through SCHEMATHESIS_HOOKS. Schemathesis has no
serializer or deserializer of its own for the media type, so without these
it can neither send a node's log upload nor check a streamed reply.

- A request body is written as JSON lines: a list one line per element,
  anything else one line; a string is sent as it is, so generated garbage
  reaches the server unchanged.
- A reply is checked line by line: every non-empty line must be a JSON
  object (empty lines are the keep-alives of a followed stream). The
  document describes such a stream as a string, so the text is returned
  for the schema check once every line has passed.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson_body(ctx, value):
    if isinstance(value, bytes):
        return {"data": value}
    if isinstance(value, str):
        return {"data": value.encode("utf-8")}
    items = value if isinstance(value, list) else [value]
    return {"data": "".join(json.dumps(item) + "\n" for item in items).encode("utf-8")}


@schemathesis.deserializer("application/x-ndjson")
def ndjson_reply(ctx, response):
    text = response.content.decode("utf-8")
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"line {number} is not JSON ({e}): {line[:200]!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f"line {number} is a JSON {type(value).__name__}, not an object: {line[:200]!r}")
    return text
