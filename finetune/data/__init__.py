"""Data sets: extract a character's dialogue from a novel; read, check, convert, de-duplicate, split."""
