"""Data package: the `templates/` folder shipped with qlspec (`qlspec.resources.shipped`)."""
