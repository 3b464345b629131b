"""Spiders of the sitekb crawler."""
