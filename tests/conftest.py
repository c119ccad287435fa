"""pytest configuration. Helpers shared by tests live in importable modules beside this file
(`paths`, `toy_engines`, ...), not here: several folders have a conftest.py, so `from conftest
import ...` would depend on collection order."""
