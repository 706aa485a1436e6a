"""Packaging for segment-analytics-python, a drop-in replacement for Segment's analytics-python."""

import os

from setuptools import setup

here = os.path.abspath(os.path.dirname(__file__))
about: dict = {}
with open(os.path.join(here, "segment", "analytics", "version.py")) as f:
    exec(f.read(), about)

readme = os.path.join(here, "README.md")
long_description = ""
if os.path.exists(readme):
    with open(readme, encoding="utf-8") as f:
        long_description = f.read()

setup(
    name="segment-analytics-python",
    version=about["VERSION"],
    description="Send analytics events to Segment's Tracking API, fast, in the background, without losing data.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=["segment.analytics", "segment.analytics.testing", "segment_e2e_cli"],
    package_dir={
        "segment.analytics": "segment/analytics",
        "segment.analytics.testing": "segment/analytics/testing",
        "segment_e2e_cli": "e2e-cli",
    },
    package_data={
        "segment.analytics": ["py.typed"],
        "segment_e2e_cli": ["README.md", "e2e-config.json", "run-e2e.sh", "scenarios/*/*.json"],
    },
    py_modules=[],
    install_requires=["requests>=2.7,<3", "python-dateutil>=2.2,<3"],
    extras_require={
        "fast": ["orjson>=3.6"],
        "oauth": ["PyJWT[crypto]>=2.0"],
        "test": ["pytest>=7", "ruff", "mypy", "types-requests", "types-python-dateutil", "numpy", "PyJWT[crypto]>=2.0"],
    },
    entry_points={"console_scripts": ["e2e-cli=segment_e2e_cli.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Typing :: Typed",
    ],
)
