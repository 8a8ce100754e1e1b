"""Marking images and reading the marks back: the provenance record (PNG iTXt + XMP), the invisible
watermark, C2PA credentials, PNG encoding and `verify`."""
