"""Tests of the bundled simulators (simulators/), through their public interfaces."""
