"""Notice delivery adapters (mail through apprise)."""
