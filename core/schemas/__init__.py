"""Request and response bodies of the public API (also used by the client and the workers)."""
