"""Data package: the `specs/` folder shipped with qlspec (`qlspec.resources.shipped`)."""
