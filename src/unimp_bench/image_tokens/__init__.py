"""Image generation's image side: the VQ image tokenizer (tokenizer.py) and the catalog's cached
image codes (catalog.py)."""
