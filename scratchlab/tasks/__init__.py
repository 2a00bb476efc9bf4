"""LightningModules, one per task: classification (segmentation and instance tasks build on the same base)."""
