"""autocompress: hardware-aware automated model compression."""
__version__ = "0.1.0"
