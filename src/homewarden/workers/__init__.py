"""workers layer (see DESIGN.md architecture)."""
