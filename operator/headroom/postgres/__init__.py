"""Talks to the app's Postgres primary (read-only): the only package that does."""
