"""The `fraudstream` subcommands, one module per group; `fraudstream.cli` assembles them.

Each module has `add_parsers(sub)`, which adds its subcommands and their arguments, and a
`cmd_*` function per subcommand, which runs it and returns the exit code. `args` holds what
they share: argument types, the common options, the settings, signal and metrics helpers.
"""
