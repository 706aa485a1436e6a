"""Packaging for the e2e-cli driver alone: ``pip install ./e2e-cli`` puts an ``e2e-cli`` command on PATH.

The library's own distribution installs no command; harnesses that want one install this.
"""

from setuptools import setup

setup(
    name="segment-analytics-e2e-cli",
    version="3.0.0",
    description="The driver Segment's shared SDK e2e harness runs against segment-analytics-python.",
    license="MIT",
    python_requires=">=3.9",
    packages=["segment_e2e_cli"],
    package_dir={"segment_e2e_cli": "."},
    package_data={"segment_e2e_cli": ["README.md", "e2e-config.json", "run-e2e.sh", "scenarios/*/*.json"]},
    install_requires=["segment-analytics-python"],
    entry_points={"console_scripts": ["e2e-cli=segment_e2e_cli.cli:main"]},
)
