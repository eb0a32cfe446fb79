"""Raw Amazon readers, k-core and splits, images, the synthetic corpus and the on-disk data contract."""
