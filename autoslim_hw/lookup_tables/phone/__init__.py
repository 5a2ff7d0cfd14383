"""Lookup tables for phones: write a bundle here, run it on the phone with benchmark_model
(`run_on_device.sh`), import the results. `run_bundle_locally` runs a bundle on this host."""
from .benchmark_output import format_benchmark_output, parse_benchmark_output
from .bundle import BENCHMARK_MODEL_URLS, BundleSettings, load_manifest, model_file_name, write_bundle
from .importer import import_results
from .local import run_bundle_locally

__all__ = ["BundleSettings", "write_bundle", "run_bundle_locally", "parse_benchmark_output", "import_results",
           "load_manifest", "format_benchmark_output", "model_file_name", "BENCHMARK_MODEL_URLS"]
