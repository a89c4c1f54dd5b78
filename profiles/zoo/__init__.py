"""Models beyond the built-in CNN, each following the model contract of ``profiles.multiexit``."""
