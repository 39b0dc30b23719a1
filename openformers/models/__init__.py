"""Model families and the Auto classes."""
