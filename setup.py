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
    # only the library: the e2e driver has its own packaging (e2e-cli/setup.py) and nothing goes on PATH
    packages=["segment.analytics", "segment.analytics.testing"],
    package_dir={
        "segment.analytics": "segment/analytics",
        "segment.analytics.testing": "segment/analytics/testing",
    },
    package_data={"segment.analytics": ["py.typed"]},
    py_modules=[],
    install_requires=["requests>=2.7,<3", "python-dateutil>=2.2,<3"],
    extras_require={
        "fast": ["orjson>=3.6"],
        "oauth": ["PyJWT[crypto]>=2.0"],
        "test": [
            "pytest>=7",
            "pytest-xdist",
            "ruff",
            "mypy",
            "types-requests",
            "types-python-dateutil",
            "numpy",
            "PyJWT[crypto]>=2.0",
            "gevent",
            "eventlet",
            "gunicorn",
            "celery",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Typing :: Typed",
    ],
)
