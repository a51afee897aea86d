"""Files: native checkpoints, golden vectors from the original model, conversion of the authors' TF
weights, and atomic output."""
