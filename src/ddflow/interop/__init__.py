"""Distilled sets to and from other code: import (ddflow.interop.imports, readers) and export."""
