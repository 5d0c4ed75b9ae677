"""Prompt building, context gathering and post-processing plugins (pluggy, project ``exlsp``)."""
