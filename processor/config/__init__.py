"""The configuration: its schema, the environment overrides, and errors that name field and file."""
