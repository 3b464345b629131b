"""Subcommand families of the `sitekb` CLI, one module each (see cli.EXTRA_COMMANDS)."""
