"""media layer (see DESIGN.md architecture)."""
