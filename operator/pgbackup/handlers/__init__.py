"""Thin kopf handlers and the operator entry point; the only package that imports kopf and kubernetes."""
