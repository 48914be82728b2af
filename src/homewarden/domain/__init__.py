"""domain layer (see DESIGN.md architecture)."""
