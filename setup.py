# setup.cfg holds the metadata; this file exists for tools and pip versions that still want it.
from setuptools import setup

setup()
