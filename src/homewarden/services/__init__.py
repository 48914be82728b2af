"""services layer (see DESIGN.md architecture)."""
