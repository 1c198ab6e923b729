"""consent-api's suite. Its fixtures (`db_url`, `settings`, `client`, `token`, `seller`, `operator`)
are in tests/conftest.py because the cross-service suites use consent-api too; fixtures of one file
(`topic_settings`, `engine`) stay in that file."""
