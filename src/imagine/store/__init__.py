"""Persistence: tables, the database handle, reads, and the writes of every table but
the tasks table (whose writes are the transitions of services/tasks/lifecycle.py)."""
