"""Command line: thin wrappers that parse, call the packages and print with rich."""
