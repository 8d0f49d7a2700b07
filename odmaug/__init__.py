"""odmaug: Ordinal Diffusion Model augmentation for medical severity classifiers."""

__version__ = "0.1.0"
