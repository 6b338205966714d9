"""The CLI's subcommands, one module each.

Every module here defines `register(subparsers)`, which adds its parser and sets
`handler=<function(args) -> int>` as the parser's default.
"""
