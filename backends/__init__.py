"""Data package: the `backends/` folder shipped with qlspec (`qlspec.resources.shipped`)."""
