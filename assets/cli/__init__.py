"""The ``assistants-backfill`` command: one module per subcommand, and the instance and summary they share."""
