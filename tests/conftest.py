"""Shared fixtures live in plugin modules so each area owns its own."""

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_media", "tests.fixtures_mail"]
