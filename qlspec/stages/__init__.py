"""The stages of `qlspec apply` and the engine that keys, plans, runs and records them."""
