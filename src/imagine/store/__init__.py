"""Persistence: tables, the database handle and the repositories. The only place with SQL."""
