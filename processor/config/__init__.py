"""The configuration: its schema, the environment overrides, and the errors that name field and file."""
