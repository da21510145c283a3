"""mespot: micro- and macro-expression spotting in long face videos."""

__version__ = "0.1.0"
