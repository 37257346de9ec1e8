"""The `snapflow` command line."""
