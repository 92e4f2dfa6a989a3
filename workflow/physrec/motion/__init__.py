"""The domain every layer uses: the character, references, terrains, termination, quaternions."""
