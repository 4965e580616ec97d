"""One module per finding: the logic a notebook calls, so no result lives only in a notebook."""
