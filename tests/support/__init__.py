"""Helpers shared by the test packages (not fixtures: plain functions and classes)."""
