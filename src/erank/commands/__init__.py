"""Subcommands of the erank CLI that belong to no other package."""
