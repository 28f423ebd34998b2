"""API key administration (admin scope)."""
