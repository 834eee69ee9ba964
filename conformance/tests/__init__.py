"""The conformance tests: one module per section of the spec (spec/clauses.toml)."""
