"""Per-database behaviour; the only modules that know which database is behind a Store."""
