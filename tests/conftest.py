"""Project-wide pytest set-up: the fake upstream fixtures for every test package."""

pytest_plugins = ["tests.fakes.fixtures"]
