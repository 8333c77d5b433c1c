"""Real-model tests (a package, so that its conftest is `realmodel.conftest` and never shadows
`tests/conftest.py`, which other test modules import as `conftest`)."""
