"""Where networks come from besides a trained IR file: seeded synthetic networks and the model zoo."""
