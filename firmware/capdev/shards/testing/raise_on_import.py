# Raises while being imported: loading it must be a clean rejection.
raise RuntimeError("broken at import")
