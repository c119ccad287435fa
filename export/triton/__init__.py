"""Triton Inference Server model repositories of omc's engines (`omc triton-repo`)."""
