"""The commands layer: what each ``odmaug`` command does, between the CLI (:mod:`odmaug.cli`:
options and help text only) and the library packages (data, diffusion, classify, metrics,
augment, benchmark). Settings are merged here, once, and names chosen in a recipe are checked
against their registries here (:mod:`odmaug.commands.names`) before any work."""
