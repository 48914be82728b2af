"""crypto layer (see DESIGN.md architecture)."""
