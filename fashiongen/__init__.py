"""FashionGen: text-to-image generation of fashion products."""

__version__ = "0.1.0"
