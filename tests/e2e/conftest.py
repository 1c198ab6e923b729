"""End-to-end suites: the services as processes (tests/support/stack.py). Each module starts the
stack it needs in its own `stack` fixture (PostgreSQL, SQLite, killed processes differ), so nothing
is shared here beyond tests/conftest.py."""
