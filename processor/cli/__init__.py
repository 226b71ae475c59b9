"""The ``cancel-processor`` command line: argument parsing, terminal output, one error style."""
