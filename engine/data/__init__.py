"""Data: query text (tokenizer, vocabularies), clip features (loading, down-sampling, time <-> index),
training labels, datasets in the original layouts, the synthetic demo data, metrics, and the
annotation files shipped with the package."""
