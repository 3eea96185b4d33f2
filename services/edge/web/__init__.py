"""The web clients the edge serves (SPEC 10): pages, their assets and the vendored libraries."""
