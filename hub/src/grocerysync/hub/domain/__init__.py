"""The hub's domain logic: plain async functions that know nothing of HTTP (the blueprints call them)."""
