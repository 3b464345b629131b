"""Bundled "Northwind Signal" demo website and its tiny local HTTP server."""
