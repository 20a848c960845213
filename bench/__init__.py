"""Benchmarks of airflow_provider_xai_image against the xAI emulator and moto S3.

Run ``python -m bench [A B C D E] [--quick] [--profile]`` (``make bench`` runs them all).
"""
