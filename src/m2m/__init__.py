"""m2m: majority-to-minority diffusion-based augmentation for skin-lesion classification (reference implementation)."""

__version__ = "0.1.0"
