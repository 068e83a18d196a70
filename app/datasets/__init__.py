"""Uploaded datasets: received, recognised, described, stored and owned per API key (issue 19)."""
