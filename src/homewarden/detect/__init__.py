"""detect layer (see DESIGN.md architecture)."""
