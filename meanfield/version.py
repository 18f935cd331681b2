"""The package version (a leaf module: ``io`` records it in every config.json without importing
the package's ``__init__``)."""
__version__ = "0.1.0"
