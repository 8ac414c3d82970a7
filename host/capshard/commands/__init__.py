"""Subcommands of `capshard`; each module defines register(subparsers)."""
