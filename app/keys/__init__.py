"""API keys with names and roles, and the caller a request's key makes (what it owns and may see)."""
