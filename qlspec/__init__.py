"""qlspec: one declarative spec -> a quantised, integerised, verified, deployed edge application."""

__version__ = "0.1.0"
