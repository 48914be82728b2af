"""store layer (see DESIGN.md architecture)."""
