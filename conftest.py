"""Root conftest: every test in the repo gets the shared real-server fixtures."""

pytest_plugins = ["adp_testing.fixtures"]
