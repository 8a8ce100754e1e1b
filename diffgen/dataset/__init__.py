"""The output dataset: storage over fsspec, the output layout, records and their fingerprints, the index
and resume, the output's lease, the WebDataset copy."""
