"""web layer (see DESIGN.md architecture)."""
