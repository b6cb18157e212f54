"""The CloudEvents contract: pydantic models, decoding and JSON Schema export."""
