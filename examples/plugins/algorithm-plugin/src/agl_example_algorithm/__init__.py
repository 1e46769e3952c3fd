"""An example Agent Lightning algorithm plugin: ``Trainer(algorithm="prompt-search")``."""
