"""Images as prompts: the image-prompt adapter (train.py, use.py), the text-to-image-embedding prior (prior.py),
and mixing images and texts in the image-embedding space (fusion.py)."""
